#!/usr/bin/env python
"""Rewrites a model directory (a training run's EXPORT_DIR: a `T5Model` or a `SharedEncoderDraft`)
with its parameters stored as bfloat16 (default) or int8 with per-channel scales, where a pair is
shipped from; `specdec.pretrained` loads it back as float32 (see `specdec.weights`).

  python scripts/ship_checkpoint.py /path/to/run/export specdec/assets/checkpoints/ende/target
  python scripts/ship_checkpoint.py --dtype=int8 /path/to/run/export .../ende/target
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("source", help="model directory to read (T5Model or SharedEncoderDraft)")
  parser.add_argument("destination", help="directory to write (replaced if it exists)")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "int8", "float32"])
  args = parser.parse_args(argv)
  from specdec import load_model, training  # pylint: disable=g-import-not-at-top
  model = load_model(args.source)
  training.save_for_inference(model, args.destination, dtype=args.dtype)
  shipped = load_model(args.destination)
  print(f"shipped {args.source} -> {args.destination}: {shipped.num_params:,} params "
        f"({args.dtype})")


if __name__ == "__main__":
  main()
