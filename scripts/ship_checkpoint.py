#!/usr/bin/env python
"""Rounds a `T5Model.save` directory (e.g. a training run's EXPORT_DIR) to bfloat16 and writes it
where a pair is shipped from (`specdec.pretrained` loads it back as float32, values exact).

  python scripts/ship_checkpoint.py /path/to/run/export specdec/assets/checkpoints/ende/target
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("source", help="T5Model.save directory to read")
  parser.add_argument("destination", help="directory to write (replaced if it exists)")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  args = parser.parse_args(argv)
  from specdec import T5Model, training  # pylint: disable=g-import-not-at-top
  model = T5Model.load(args.source)
  training.save_for_inference(model, args.destination, dtype=args.dtype)
  shipped = T5Model.load(args.destination)
  print(f"shipped {args.source} -> {args.destination}: {shipped.num_params:,} params "
        f"({args.dtype})")


if __name__ == "__main__":
  main()
