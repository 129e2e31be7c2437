r"""Translate your own sentences with a shipped pair, by speculative decoding.

    python scripts/translate.py "The file is saved." "Open the dialog."
    echo "The file is saved." | python scripts/translate.py
    python scripts/translate.py --input_file=sentences.txt --temperature=0.7 --seed=1
    python scripts/translate.py --compare "The file is saved."   # + baseline, alpha, speedup
    python scripts/translate.py --draft=draft_plain "..."         # another of the pair's drafts

Sentences come from the arguments, else from --input_file (one per line, '-' for stdin), else
from stdin; blank lines are skipped. Prints one translation per line and nothing else. With
--compare, each sentence is also translated by the target alone (`specdec.generate`), one
sentence at a time, and the script prints the baseline's output, whether the two are identical
(greedy decoding: they must be), α, target calls, and the walltime speedup measured as in
`specdec.comparison` (compile excluded, medians of --repeats interleaved runs), with the
machine and its load average. Needs neither seqio nor tensorflow.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence, TextIO

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from specdec import benchmarking, comparison, pretrained, timing
from specdec.speculative import speculative_generate

_PAIR = flags.DEFINE_string("pair", "ende", "Shipped pair (see specdec.pretrained.names()).")
_DRAFT = flags.DEFINE_string("draft", "draft", "Which of the pair's drafts proposes tokens "
                             "(PretrainedPair.draft_names(): e.g. draft, draft_plain).")
_GAMMA = flags.DEFINE_integer("gamma", 5, "Draft tokens per target pass (as the demo).")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0: greedy; otherwise sample.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample from the k most likely tokens (0: off).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass (1: off).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed, sentences and flags give "
                             "the same samples.")
_MAX_DECODE_LEN = flags.DEFINE_integer("max_decode_len", 128, "Decoded tokens at most, per "
                                       "sentence (a translation that reaches it is cut).")
_MAX_INPUT_LEN = flags.DEFINE_integer("max_input_len", 512, "Longest input in tokens (a longer "
                                      "sentence is an error, not silently cut).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "Sentences per decode (without --compare).")
_INPUT_FILE = flags.DEFINE_string("input_file", None, "Sentences, one per line ('-': stdin).")
_COMPARE = flags.DEFINE_bool("compare", False, "Also run the baseline and report identical-or-"
                             "not, alpha, target calls and the walltime speedup.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "With --compare: timed runs per sentence and "
                                "decoder (median).")

_PAD_MULTIPLE = 16  # Inputs are padded to a multiple of this (fewer shapes, fewer compiles).


def read_sentences(args: Sequence[str], *, input_file: str | None, stdin: TextIO) -> list[str]:
  """The sentences to translate: `args` if any, else the lines of `input_file` ('-': stdin),
  else the lines of `stdin`; blank lines dropped. ValueError when there are none."""
  if args and input_file:
    raise ValueError("give sentences as arguments or --input_file, not both")
  if args:
    lines = list(args)
  elif input_file and input_file != "-":
    if not os.path.isfile(input_file):
      raise ValueError(f"--input_file: no such file {input_file}")
    with open(input_file, encoding="utf-8") as f:
      lines = f.read().splitlines()
  else:
    lines = stdin.read().splitlines()
  sentences = [line.strip() for line in lines if line.strip()]
  if not sentences:
    raise ValueError("no sentences: give them as arguments, in --input_file, or on stdin")
  return sentences


def encode(pair: pretrained.PretrainedPair, sentences: Sequence[str], *,
           max_input_len: int) -> np.ndarray:
  """int32 `[N, L]` encoder inputs, L the longest padded up to a multiple of 16."""
  tokens = pair.encode(sentences)
  lengths = (tokens > 0).sum(axis=1)
  if lengths.max() > max_input_len:
    i = int(np.argmax(lengths))
    raise ValueError(f"sentence {i + 1} is {lengths[i]} tokens long, more than "
                     f"--max_input_len={max_input_len}")
  width = -(-tokens.shape[1] // _PAD_MULTIPLE) * _PAD_MULTIPLE
  return benchmarking.pad_prompts(tokens, width)


def _sampling() -> dict:
  return dict(temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value)


def translate(pair, draft, tokens: np.ndarray) -> list[np.ndarray]:
  """Speculative decodes of every row, --batch_size rows at a time: int32 `[T]` rows."""
  out = []
  rng = jax.random.PRNGKey(_SEED.value) if _TEMPERATURE.value > 0 else None
  for start in range(0, tokens.shape[0], _BATCH_SIZE.value):
    batch_rng = None if rng is None else jax.random.fold_in(rng, start)
    result = speculative_generate(pair.target, draft, tokens[start:start + _BATCH_SIZE.value],
                                  gamma=_GAMMA.value, max_decode_len=_MAX_DECODE_LEN.value,
                                  rng=batch_rng, **_sampling())
    out.extend(np.asarray(result.tokens))
  return out


def _warn_if_cut(rows: Sequence[np.ndarray]) -> None:
  for i, row in enumerate(rows):
    if 1 not in row.tolist():
      print(f"translate.py: sentence {i + 1} reached --max_decode_len={_MAX_DECODE_LEN.value} "
            "before its end; its translation is cut", file=sys.stderr)


def compare(pair, draft, sentences: Sequence[str], tokens: np.ndarray, load_before) -> dict:
  """--compare: both decoders, one sentence at a time, timed; prints and returns the totals."""
  rows = comparison.compare(pair.target, draft, tokens, gamma=_GAMMA.value,
                            max_decode_len=_MAX_DECODE_LEN.value, repeats=_REPEATS.value,
                            seed=_SEED.value, **_sampling())
  greedy = _TEMPERATURE.value == 0
  for i, (src, r) in enumerate(zip(sentences, rows)):
    print(f"[{i + 1}] {src}")
    print(f"  speculative: {pair.decode(r.speculative_tokens)}")
    if not greedy:
      print(f"  baseline:    {pair.decode(r.baseline_tokens)}  (another sample)")
    elif r.identical:
      print("  baseline:    identical")
    else:
      print(f"  baseline:    DIFFERS: {pair.decode(r.baseline_tokens)}")
    print(f"  alpha {r.stats['alpha']:.2f}, {r.stats['target_calls']} target calls vs "
          f"{r.baseline_steps} baseline steps, speedup {r.baseline_s / r.speculative_s:.2f}x "
          f"({r.baseline_s * 1e3:.1f} ms -> {r.speculative_s * 1e3:.1f} ms)")
  total = comparison.totals(rows)
  print()
  for line in comparison.report_lines(total, gamma=_GAMMA.value, greedy=greedy):
    print(line)
  print(timing.machine_line(timing.machine_info(load_before)))
  _warn_if_cut([r.speculative_tokens for r in rows])
  return total


def main(argv: Sequence[str]) -> None:
  load_before = os.getloadavg()
  logging.set_verbosity(logging.WARNING)  # orbax logs every read at INFO.
  try:
    sentences = read_sentences(argv[1:], input_file=_INPUT_FILE.value, stdin=sys.stdin)
    pair = pretrained.load(_PAIR.value)
    draft = pair.get_draft(_DRAFT.value)
    tokens = encode(pair, sentences, max_input_len=_MAX_INPUT_LEN.value)
    for name, flag in (("gamma", _GAMMA), ("batch_size", _BATCH_SIZE), ("repeats", _REPEATS),
                       ("max_decode_len", _MAX_DECODE_LEN)):
      if flag.value < 1:
        raise ValueError(f"--{name} must be >= 1, got {flag.value}")
    if _COMPARE.value:
      compare(pair, draft, sentences, tokens, load_before)
      return
    rows = translate(pair, draft, tokens)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  for row in rows:
    print(pair.decode(row))
  _warn_if_cut(rows)


if __name__ == "__main__":
  app.run(main)
