"""Benchmark: ms/token of `generate` vs `speculative_generate` on this CPU.

Drafts: the target itself (every draft accepted at temperature 0: α = 1, the upper bound on the
speedup, paid for with a draft as expensive as the target) and a random untrained T5 draft
(α ≈ 0: the lower bound, one token per target pass plus γ wasted draft steps). Same prompts,
same process; each setting is compiled by a warm-up run, then timed as the median of --runs
rounds interleaved with the baseline (speedup = baseline median / speculative median).
Decoding is of a fixed length (eos_id None), so ms/token = wall time / --decode_len (the
latency of one token of one row; a batch decodes its rows in parallel).

  python scripts/bench_speculative.py                   # writes results/bench_speculative.json
  python scripts/bench_speculative.py --gammas 1 4 --batch_sizes 1 --runs 3 --output /tmp/b.json

Models are the defaults of scripts/verify_cost.py (timing does not depend on the weights), or
--checkpoint / --draft_checkpoint. Other processes competing for the CPU inflate every column;
the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import numpy as np  # noqa: E402

import specdec  # noqa: E402
from specdec import T5Model, timing  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_cost import DRAFT, TARGET  # noqa: E402  pylint: disable=g-import-not-at-top


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--gammas", type=int, nargs="+", default=list(range(1, 9)))
  parser.add_argument("--drafts", nargs="+", default=["self", "random"],
                      choices=["self", "random"])
  parser.add_argument("--decode_len", type=int, default=32, help="Tokens generated per row.")
  parser.add_argument("--source_len", type=int, default=32, help="Encoder input length.")
  parser.add_argument("--runs", type=int, default=5, help="Timed runs per setting (median).")
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--checkpoint", help="A saved T5Model (T5Model.save) to use as target.")
  parser.add_argument("--draft_checkpoint", help="A saved T5Model to use as the random draft.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="results/bench_speculative.json")
  args = parser.parse_args(argv)
  for name in ("decode_len", "source_len", "runs"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive")
  if any(b < 1 for b in args.batch_sizes):
    parser.error("--batch_sizes must be positive")
  if any(g < 1 for g in args.gammas):
    parser.error("--gammas must be >= 1")
  if args.temperature < 0:
    parser.error("--temperature must be >= 0")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  target = T5Model.load(args.checkpoint) if args.checkpoint else T5Model.init(TARGET, 0)
  random_draft = (T5Model.load(args.draft_checkpoint) if args.draft_checkpoint
                  else T5Model.init(DRAFT.replace(vocab_size=target.vocab_size), 1))
  drafts = {"self": target, "random": random_draft}
  rng = jax.random.PRNGKey(args.seed)
  common = dict(max_decode_len=args.decode_len, temperature=args.temperature, rng=rng,
                eos_id=None)
  load_before = os.getloadavg()
  print(f"target {target.num_params / 1e6:.1f}M params, random draft "
        f"{random_draft.num_params / 1e6:.2f}M; {args.decode_len} tokens/row, "
        f"T={args.temperature}, median of {args.runs}")
  rows = []
  for batch in args.batch_sizes:
    prompts = timing.random_prompts(batch, args.source_len, target.vocab_size, seed=args.seed)
    baseline = lambda: specdec.generate(target, prompts, **common).tokens
    base_s = timing.time_decode(baseline, repeats=args.runs)
    base_ms = base_s * 1e3 / args.decode_len
    want = np.asarray(baseline())
    # Each speculative setting is timed in rounds interleaved with the baseline, and its speedup
    # is the ratio of those two medians: robust to slow drifts of the machine's load.
    print(f"\nbatch {batch}: baseline generate {base_ms:.3f} ms/token")
    print(f"{'draft':>7} {'gamma':>5} {'ms/token':>9} {'base ms':>9} {'speedup':>8} {'alpha':>6} "
          f"{'tok/call':>8} {'same':>5}")
    rows.append({"batch": batch, "draft": "baseline", "gamma": 0, "ms_per_token": base_ms,
                 "speedup": 1.0})
    for name in args.drafts:
      for gamma in args.gammas:
        run = lambda: specdec.speculative_generate(target, drafts[name], prompts, gamma=gamma,
                                                   **common)
        times = timing.interleaved_medians({"base": baseline, "spec": lambda: run().tokens},
                                           repeats=args.runs)
        result = run()
        summary = result.stats.summary()
        same = bool(np.array_equal(np.asarray(result.tokens), want))
        ms = times["spec"] * 1e3 / args.decode_len
        pair_base_ms = times["base"] * 1e3 / args.decode_len
        speedup = times["base"] / times["spec"]
        print(f"{name:>7} {gamma:>5} {ms:>9.3f} {pair_base_ms:>9.3f} {speedup:>8.2f} "
              f"{summary['alpha']:>6.2f} {summary['tokens_per_target_call']:>8.2f} "
              f"{str(same):>5}")
        rows.append({"batch": batch, "draft": name, "gamma": gamma, "ms_per_token": ms,
                     "baseline_ms_per_token": pair_base_ms,
                     "speedup": speedup, "alpha": summary["alpha"],
                     "tokens_per_target_call": summary["tokens_per_target_call"],
                     "same_tokens_as_baseline": same})
  result = {
      "target_params": target.num_params, "draft_params": random_draft.num_params,
      "decode_len": args.decode_len, "source_len": args.source_len, "runs": args.runs,
      "temperature": args.temperature, "rows": rows,
      "machine": timing.machine_info(load_before),
  }
  if args.output:
    timing.write_json(args.output, result)
  return result


if __name__ == "__main__":
  main()
