#!/usr/bin/env python
r"""Checks that greedy speculative decoding reproduces `generate` token for token, on this device.

    python scripts/check_greedy_parity.py                       # shipped EN→DE pair, 32 sentences
    python scripts/check_greedy_parity.py --precision=highest   # f32 matmuls at full precision

In exact arithmetic the two are identical; in floating point they agree when the target's logits
at a position do not depend on how many positions one call computes (the verify pass scores γ+1
rows in one matmul, `generate` one row). XLA:CPU gives identical outputs; on a GPU, JAX's default
precision for float32 matmuls (TF32 on NVIDIA since Ampere) rounds differently per shape and can
flip a near-tie. For each mismatching sentence this prints the first differing position and the
target's top-1 minus top-2 logit gap there (teacher-forced on the baseline's output), so a
near-tie (gap ~1e-3) is told apart from a bug (large gap). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specdec",
                       "assets", "checkpoints", "ende")


def first_mismatches(base, spec) -> list[tuple[int, int]]:
  """(row, first differing position) for each row where int `[B, T]` outputs differ."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  base, spec = np.asarray(base), np.asarray(spec)
  out = []
  for row in range(base.shape[0]):
    diff = np.flatnonzero(base[row] != spec[row])
    if diff.size:
      out.append((row, int(diff[0])))
  return out


def mismatch_report(target, encoder_input_tokens, base, spec, *, first_row: int = 0
                    ) -> list[dict]:
  """One dict per row where greedy outputs `base` and `spec` (int `[B, T]`) differ: the first
  differing position, both tokens there, and the target's top-1 minus top-2 logit gap at that
  position, teacher-forced on the baseline's output (a near-tie has a gap ~1e-3; a bug does
  not). Rows are numbered from `first_row`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  base, spec = np.asarray(base), np.asarray(spec)
  found = first_mismatches(base, spec)
  if not found:
    return []
  decoder_inputs = np.concatenate([np.zeros_like(base[:, :1]), base[:, :-1]], axis=1)
  logits = np.asarray(target.logits(encoder_input_tokens, decoder_inputs))
  out = []
  for row, pos in found:
    top2 = np.sort(logits[row, pos])[-2:]
    out.append({"sentence": first_row + row, "position": pos,
                "baseline_token": int(base[row, pos]), "speculative_token": int(spec[row, pos]),
                "top1_minus_top2_logit": float(top2[1] - top2[0])})
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--target", default=os.path.join(SHIPPED, "target"))
  parser.add_argument("--draft", default=os.path.join(SHIPPED, "draft"))
  parser.add_argument("--num_sentences", type=int, default=32)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--gamma", type=int, default=3)
  parser.add_argument("--max_decode_len", type=int, default=48)
  parser.add_argument("--precision", default=None, choices=["default", "high", "highest"],
                      help="jax_default_matmul_precision (default: leave JAX's setting)")
  parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                      help="compute dtype of both models (T5Config.dtype; default: as saved)")
  args = parser.parse_args(argv)
  if args.num_sentences <= 0 or args.batch_size <= 0:
    raise ValueError("--num_sentences and --batch_size must be positive")

  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if args.precision:
    jax.config.update("jax_default_matmul_precision", args.precision)
  from specdec import (T5Model, data, generate, load_model, speculative_generate,  # pylint: disable=g-import-not-at-top
                       training)

  target, draft = T5Model.load(args.target), load_model(args.draft)  # Any draft kind.
  if args.dtype:
    target, draft = (m.replace(config=m.config.replace(dtype=args.dtype)) for m in (target, draft))
  sources = [s for s, _ in data.read_pairs("specdec_ende", "test")][:args.num_sentences]
  inputs = training.encode(sources, max_length=64, prefix=training.task_prefix("specdec_ende"))
  mismatches, compared = [], 0
  for enc, real in training.encoder_batches(inputs, batch_size=args.batch_size, buckets=(64,)):
    base = np.asarray(generate(target, enc, max_decode_len=args.max_decode_len).tokens)[:real]
    spec = np.asarray(speculative_generate(target, draft, enc, gamma=args.gamma,
                                           max_decode_len=args.max_decode_len).tokens)[:real]
    mismatches += mismatch_report(target, enc[:real], base, spec, first_row=compared)
    compared += real
  result = {"device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})",
            "dtype": target.config.dtype,
            "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
            "sentences": compared, "mismatching_sentences": len(mismatches),
            "mismatches": mismatches}
  print(json.dumps(result, indent=2))
  if mismatches:
    raise SystemExit(f"{len(mismatches)} of {compared} greedy outputs differ from generate's")
  return result


if __name__ == "__main__":
  main()
