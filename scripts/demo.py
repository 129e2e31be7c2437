r"""The main job: speculative decoding on the shipped EN→DE pair, against the baseline.

    python scripts/demo.py               # 8 test sentences, gamma 3, greedy
    python scripts/demo.py --num_sentences=16 --gamma=4

Translates test sentences with `specdec.generate` (the target alone) and with
`specdec.speculative_generate` (target + distilled draft), one sentence at a time (batch 1, as
in the paper), checks the greedy outputs are identical token for token, and reports α, target
calls saved and the walltime speedup (medians over sentences, compile time excluded).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import specdec  # noqa: E402
from specdec import data, pretrained  # noqa: E402

_PAIR = flags.DEFINE_string("pair", "ende", "Shipped pair to load (see specdec.pretrained.names()).")
_NUM = flags.DEFINE_integer("num_sentences", 8, "Test sentences to translate.")
_GAMMA = flags.DEFINE_integer("gamma", 3, "Draft tokens per target pass.")
_MAX_LEN = flags.DEFINE_integer("max_decode_len", 48, "Decoded tokens at most, per sentence.")
_INPUT_LEN = flags.DEFINE_integer("input_len", 64, "Encoder inputs are padded to this length.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per sentence and method (median).")


def _timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO.
  pair = pretrained.load(_PAIR.value)
  print(f"Loaded pair {pair.name!r}: target {pair.target.num_params / 1e6:.1f}M params, "
        f"draft {pair.draft.num_params / 1e6:.2f}M params (c = draft/target size "
        f"{pair.draft.num_params / pair.target.num_params:.2f})")
  sources = [src for src, _ in data.read_pairs(pair.task, "test")][:_NUM.value]
  tokens = pair.encode(sources, max_length=_INPUT_LEN.value)
  tokens = np.pad(tokens, ((0, 0), (0, _INPUT_LEN.value - tokens.shape[1])))
  kw = dict(max_decode_len=_MAX_LEN.value)

  def baseline(row):
    return specdec.generate(pair.target, row, **kw)

  def speculative(row):
    return specdec.speculative_generate(pair.target, pair.draft, row, gamma=_GAMMA.value, **kw)

  with tqdm(total=2 + len(sources), desc="compiling", unit="step", file=sys.stdout) as bar:
    jax.block_until_ready(baseline(tokens[:1]))
    bar.update()
    jax.block_until_ready(speculative(tokens[:1]))
    bar.update()
    bar.set_description("translating")
    rows = []
    for i in range(len(sources)):
      row = tokens[i:i + 1]
      base_times, spec_times = [], []
      for _ in range(_REPEATS.value):
        base, t = _timed(lambda: baseline(row))
        base_times.append(t)
        spec, t = _timed(lambda: speculative(row))
        spec_times.append(t)
      rows.append(dict(base=base, spec=spec, base_time=np.median(base_times),
                       spec_time=np.median(spec_times)))
      bar.update()

  identical = all(np.array_equal(r["base"].tokens, r["spec"].tokens) for r in rows)
  print()
  for src, r in zip(sources, rows):
    same = "==" if np.array_equal(r["base"].tokens, r["spec"].tokens) else "!="
    print(f"EN: {src}\nDE: {pair.decode(r['spec'].tokens)[0]}   [{same} baseline]\n")

  generated = sum(int(np.sum(np.asarray(r["base"].tokens) > 0)) for r in rows)  # EOS included
  stats = [r["spec"].stats.summary() for r in rows]
  accepted = sum(s["accepted"] for s in stats)
  rejected = sum(s["rejected"] for s in stats)
  target_calls = sum(s["target_calls"] for s in stats)
  base_total = sum(r["base_time"] for r in rows)
  spec_total = sum(r["spec_time"] for r in rows)
  speedups = [r["base_time"] / r["spec_time"] for r in rows]
  print(f"greedy outputs identical to the baseline: {identical}")
  print(f"alpha (acceptance rate, MLE):            {specdec.analysis.alpha_from_counts(accepted, rejected):.3f}")
  print(f"target calls: {target_calls} speculative vs ~{generated} baseline steps "
        f"({1 - target_calls / generated:.0%} saved)")
  print(f"walltime: baseline {base_total * 1e3:.0f} ms, speculative {spec_total * 1e3:.0f} ms; "
        f"speedup {base_total / spec_total:.2f}x overall, median per sentence "
        f"{np.median(speedups):.2f}x (gamma={_GAMMA.value}, batch 1, {jax.devices()[0].platform})")
  if not identical:
    raise SystemExit("speculative and baseline greedy outputs differ")


if __name__ == "__main__":
  app.run(main)
