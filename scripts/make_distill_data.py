#!/usr/bin/env python
"""Decodes the target's own outputs for training inputs: distillation data for the draft.

  python scripts/make_distill_data.py --teacher=specdec/assets/checkpoints/ende/target \
      --out=/tmp/ende_target_greedy.npz --num_examples=32768

then distil on them (forward KL on the target's logits along its own outputs):

  python scripts/train.py --gin_file=configs/models/ende_draft.gin \
      --gin_file=configs/runs/distill.gin --gin.TEACHER_DIR="'.../target'" \
      --gin.train.distill_targets="'/tmp/ende_target_greedy.npz'" ...

The inputs are the task's train split tokenised as `scripts/train.py` does (pairs over
`--max_length` tokens dropped); with `--num_examples` a subset drawn by a seeded permutation.
See `specdec.distill_data` for why and for the file format.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--teacher", required=True, help="T5Model.save directory of the target")
  parser.add_argument("--out", required=True, help=".npz file to write")
  parser.add_argument("--task", default="specdec_ende")
  parser.add_argument("--num_examples", type=int, default=0, help="0 = the whole train split")
  parser.add_argument("--max_length", type=int, default=64)
  parser.add_argument("--max_decode_len", type=int, default=64)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--batch_size", type=int, default=128)
  args = parser.parse_args(argv)
  if args.num_examples < 0:
    parser.error(f"--num_examples must be >= 0, got {args.num_examples}")

  import numpy as np  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from specdec import T5Model, data, distill_data, training  # pylint: disable=g-import-not-at-top

  teacher = T5Model.load(args.teacher)
  pairs = data.read_pairs(args.task, "train")
  inputs, _ = training.tokenize_pairs(pairs, task=args.task, max_length=args.max_length)
  if args.num_examples and args.num_examples < len(inputs):
    keep = np.sort(np.random.default_rng(args.seed).permutation(len(inputs))[:args.num_examples])
    inputs = [inputs[i] for i in keep]
  t0 = time.time()
  with tqdm(total=len(inputs), unit="ex", desc="decoding") as bar:
    outputs = distill_data.teacher_outputs(
        teacher, inputs, batch_size=args.batch_size, max_decode_len=args.max_decode_len,
        temperature=args.temperature, seed=args.seed, progress=lambda n: bar.update(n - bar.n))
  seconds = time.time() - t0
  meta = dict(teacher=os.path.abspath(args.teacher), task=args.task, split="train",
              temperature=args.temperature, seed=args.seed, max_length=args.max_length,
              max_decode_len=args.max_decode_len, seconds=round(seconds, 1))
  distill_data.save(args.out, inputs, outputs, meta=meta)
  unfinished = sum(int(o[-1] != training.EOS_ID) for o in outputs)
  print(f"wrote {len(outputs)} teacher outputs to {args.out} ({seconds:.0f}s; mean length "
        f"{np.mean([len(o) for o in outputs]):.1f} tokens, {unfinished} without EOS)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
