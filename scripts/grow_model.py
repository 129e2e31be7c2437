#!/usr/bin/env python
"""Grows a trained T5 into a larger shape with the same outputs (`specdec.grow`): the warm start
of a bigger target trained where there is no accelerator. The shape is a T5X preset (vocabulary,
dtype and dropout kept from the model) with optional overrides. A shared-encoder draft made for
the model can be grown along (`--draft`) to read the grown model's encoder.

  python scripts/grow_model.py --model=specdec/assets/checkpoints/ende/target \
    --preset=t5_1_1_small --out=/tmp/grown/target \
    --draft=specdec/assets/checkpoints/ende/draft --draft_out=/tmp/grown/draft

Then train from it: `scripts/train.py ... --gin.INIT_FROM="'/tmp/grown/target'"` (its config
equals configs/models/ende_target_small.gin's up to dropout).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPE_FIELDS = ("emb_dim", "num_heads", "mlp_dim", "num_encoder_layers", "num_decoder_layers")


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", required=True, help="T5Model directory to grow")
  parser.add_argument("--out", required=True, help="directory for the grown model (float32)")
  parser.add_argument("--preset", default="t5_1_1_small", help="T5X shape (T5Config.preset)")
  for name in SHAPE_FIELDS:
    parser.add_argument(f"--{name}", type=int, default=None, help=f"override the preset's {name}")
  parser.add_argument("--draft", default=None, help="SharedEncoderDraft directory to grow along")
  parser.add_argument("--draft_out", default=None, help="where the grown draft goes")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--noise", type=float, default=1e-3,
                      help="zero-sum noise on split kernels, relative to their std")
  args = parser.parse_args(argv)
  if (args.draft is None) != (args.draft_out is None):
    parser.error("--draft and --draft_out go together")
  return args


def main(argv=None):
  args = parse_args(argv)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from specdec import grow, load_model  # pylint: disable=g-import-not-at-top
  from specdec.config import T5Config  # pylint: disable=g-import-not-at-top
  model = load_model(args.model)
  keep = {k: getattr(model.config, k) for k in ("vocab_size", "dtype", "dropout_rate")}
  shape = {k: getattr(args, k) for k in SHAPE_FIELDS if getattr(args, k) is not None}
  config = T5Config.preset(args.preset, **keep, **shape)
  t0 = time.time()
  grown = grow.grow_t5(model, config, seed=args.seed, noise=args.noise)
  # The check that matters: the same logits on a few random sequences.
  rng = np.random.default_rng(args.seed)
  enc = rng.integers(3, config.vocab_size, (2, 16)).astype(np.int32)
  dec = np.concatenate([np.zeros((2, 1), np.int32),
                        rng.integers(3, config.vocab_size, (2, 15)).astype(np.int32)], 1)
  want = np.asarray(model.logits(enc, dec))
  diff = float(np.abs(np.asarray(grown.logits(enc, dec)) - want).max())
  print(f"grew {args.model} ({model.num_params:,} params) into {config}: {grown.num_params:,} "
        f"params in {time.time() - t0:.0f}s; max |logit difference| {diff:.2e} "
        f"(largest logit {np.abs(want).max():.1f})")
  if diff > 1e-4 * max(1.0, float(np.abs(want).max())):
    raise SystemExit(f"the grown model's logits differ from {args.model}'s by {diff}")
  grown.save(args.out)
  print(f"saved {args.out}")
  if args.draft:
    draft = grow.grow_shared_encoder_draft(load_model(args.draft), grown, seed=args.seed,
                                           noise=args.noise)
    draft.save(args.draft_out)
    print(f"grew the draft {args.draft} to read the grown encoder: {args.draft_out}")


if __name__ == "__main__":
  main()
