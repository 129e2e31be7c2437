r"""The main job: speculative decoding on the shipped EN→DE pair, against the baseline.

    python scripts/demo.py               # 8 test sentences, gamma 7, greedy
    python scripts/demo.py --num_sentences=16 --gamma=4
    python scripts/demo.py --draft=draft_small     # the small T5 draft instead

Translates test sentences with `specdec.generate` (the target alone) and with
`specdec.speculative_generate` (target + the pair's draft: by default its shared-encoder draft,
which reads the target's encoder output; `--draft` picks another), one sentence at a time (batch 1, as
in the paper), checks the greedy outputs are identical token for token, and reports α, target
calls saved and the walltime speedup (medians of interleaved runs, compile time excluded; see
`specdec.comparison`), the cost model's terms measured as the loop runs them (c, one draft step
over one target step: not the parameter ratio, printed too; c₂, the draft's 2-token catch-up;
v(γ); the fixed cost of a decode), its prediction at the measured α with measured/predicted and
the loop's own overhead per iteration, and the machine and its load average before and after:
the walltime ratios depend on both.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
from tqdm import tqdm

from specdec import benchmarking, comparison, data, pretrained, timing

_PAIR = flags.DEFINE_string("pair", "ende", "Shipped pair to load (see specdec.pretrained.names()).")
_DRAFT = flags.DEFINE_string("draft", "draft", "Which of the pair's drafts (its draft_names()).")
_NUM = flags.DEFINE_integer("num_sentences", 8, "Test sentences to translate.")
_GAMMA = flags.DEFINE_integer("gamma", 7, "Draft tokens per target pass (7: the best of 5-9 "
                              "with the shipped draft on a 2-core CPU, results/demo_gamma.txt).")
_MAX_LEN = flags.DEFINE_integer("max_decode_len", 48, "Decoded tokens at most, per sentence.")
_INPUT_LEN = flags.DEFINE_integer("input_len", 64, "Encoder inputs are padded to this length.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per sentence and method (median).")


def main(argv):
  del argv
  load_before = os.getloadavg()
  logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO.
  pair = pretrained.load(_PAIR.value)
  draft = pair.get_draft(_DRAFT.value)
  sources = [src for src, _ in data.read_pairs(pair.task, "test")][:_NUM.value]
  tokens = benchmarking.pad_prompts(pair.encode(sources, max_length=_INPUT_LEN.value),
                                    _INPUT_LEN.value)
  with tqdm(total=len(sources), desc="translating (the first compiles)", unit="sentence",
            disable=None, file=sys.stderr) as bar:  # No bar when stderr is not a terminal.
    rows = comparison.compare(pair.target, draft, tokens, gamma=_GAMMA.value,
                              max_decode_len=_MAX_LEN.value, repeats=_REPEATS.value,
                              progress=lambda _: bar.update())
  total = comparison.totals(rows)
  costs = comparison.cost_model(pair.target, draft, total, gamma=_GAMMA.value,
                                position=_MAX_LEN.value // 2, encoder_length=_INPUT_LEN.value)
  machine = timing.machine_info(load_before)

  print(f"Pair {pair.name!r}: target {pair.target.num_params / 1e6:.1f}M params, "
        f"{_DRAFT.value} ({type(draft).__name__}) {draft.num_params / 1e6:.2f}M params "
        f"(parameter ratio {draft.num_params / pair.target.num_params:.2f})\n")
  for src, r in zip(sources, rows):
    same = "==" if r.identical else "!="
    print(f"EN: {src}\nDE: {pair.decode(r.speculative_tokens)}   [{same} baseline]\n")
  for line in comparison.report_lines(total, gamma=_GAMMA.value, greedy=True):
    print(line)
  for line in comparison.cost_lines(costs, gamma=_GAMMA.value):
    print(line)
  print(timing.machine_line(machine))
  if total["identical"] != total["rows"]:
    raise SystemExit("speculative and baseline greedy outputs differ")


if __name__ == "__main__":
  app.run(main)
