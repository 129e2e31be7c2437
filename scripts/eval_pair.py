#!/usr/bin/env python
"""Test BLEU (greedy) of a target and its drafts, and α of each draft against the target.

  python scripts/eval_pair.py --target=specdec/assets/checkpoints/ende/target \
      --draft=draft=specdec/assets/checkpoints/ende/draft \
      --draft=draft_small=specdec/assets/checkpoints/ende/draft_small \
      --draft=draft_plain=specdec/assets/checkpoints/ende/draft_plain \
      --num_examples=500 --alpha_examples=128 --gamma=4 --out=/tmp/eval.json

α is `speculative_generate(...).stats.summary()['alpha']` pooled over the first
`--alpha_examples` test inputs, at temperature 0 (greedy) and 1 (sampling, seed 0).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--target", required=True, help="T5Model.save directory of the target")
  parser.add_argument("--draft", action="append", default=[],
                      help="NAME=DIR (repeatable): a T5Model or SharedEncoderDraft directory")
  parser.add_argument("--task", default="specdec_ende")
  parser.add_argument("--split", default="test")
  parser.add_argument("--num_examples", type=int, default=0, help="0 = the whole split")
  parser.add_argument("--alpha_examples", type=int, default=128)
  parser.add_argument("--gamma", type=int, default=4)
  parser.add_argument("--temperatures", default="0,1")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--max_decode_len", type=int, default=64)
  parser.add_argument("--skip_bleu", action="store_true")
  parser.add_argument("--out", default=None, help="write the results as JSON here")
  args = parser.parse_args(argv)

  from specdec import T5Model, data, load_model, training  # pylint: disable=g-import-not-at-top

  drafts = {}
  for item in args.draft:
    if "=" not in item:
      raise ValueError(f"--draft must be NAME=DIR, got {item!r}")
    name, path = item.split("=", 1)
    drafts[name] = load_model(path)  # A T5Model or a SharedEncoderDraft.
  target = T5Model.load(args.target)
  pairs = data.read_pairs(args.task, args.split)
  if args.num_examples:
    pairs = pairs[:args.num_examples]
  sp = training.tokenizer()
  buckets = (64,)  # One shape per model: compile once.
  results = {"task": args.task, "split": args.split, "bleu_examples": len(pairs),
             "alpha_examples": args.alpha_examples, "gamma": args.gamma,
             "max_decode_len": args.max_decode_len,
             "params": {"target": target.num_params,
                        **{k: v.num_params for k, v in drafts.items()}}}

  if not args.skip_bleu:
    copy = data.bleu([t for _, t in pairs], [s for s, _ in pairs])["bleu"]
    results["bleu"] = {"copy_source_baseline": copy}
    print(f"copy-the-source baseline BLEU: {copy:.2f}", flush=True)
    for name, model in [("target", target)] + list(drafts.items()):
      t = time.time()
      if hasattr(model, "bind"):  # A shared-encoder draft translates over the target's encoder.
        model = model.bind(target)
      bleu, preds = training.evaluate_bleu(model, pairs, task=args.task,
                                           batch_size=args.batch_size,
                                           max_decode_len=args.max_decode_len, buckets=buckets,
                                           sp=sp)
      results["bleu"][name] = bleu
      print(f"{name}: BLEU {bleu:.2f} on {len(pairs)} {args.split} pairs ({time.time() - t:.0f}s)"
            f"; e.g. {pairs[1][0]!r} -> {preds[1]!r}", flush=True)

  inputs = training.encode([s for s, _ in pairs[:args.alpha_examples]], max_length=64, sp=sp,
                           prefix=training.task_prefix(args.task))
  batches = training.encoder_batches(inputs, batch_size=args.batch_size, buckets=buckets)
  results["alpha"] = {}
  for name, model in drafts.items():
    for temp in [float(x) for x in args.temperatures.split(",")]:
      t = time.time()
      alpha = training.acceptance_rate(target, model, batches, temp, gamma=args.gamma,
                                       max_decode_len=args.max_decode_len)
      results["alpha"][f"{name}@T={temp:g}"] = alpha
      print(f"alpha({name}, T={temp:g}, gamma={args.gamma}) = {alpha:.3f} "
            f"({time.time() - t:.0f}s)", flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))
  return results


if __name__ == "__main__":
  main()
