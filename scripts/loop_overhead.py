"""The speculative loop's own overhead: a free, always-right draft against the ideal.

The draft is `specdec.simulated`'s simulated-acceptance draft around a unigram draft (its step
costs next to nothing): it proposes the target's own greedy continuation, each token right with
probability --alpha (default 1: every block is kept). What is left of a decode is then the
target's passes and the loop's bookkeeping. The ideal time of a speculative decode is

  fixed + calls × pass(γ+1),

where calls is the target passes the decode made, pass(k) one k-token target pass timed inside a
jitted loop, and fixed = generate(max_decode_len=1) − pass(1): the encoder pass, cache set-up and
dispatch that every decode pays once. Efficiency = ideal / measured time, the ideal speedup =
baseline / ideal. Everything (baseline, speculative at each γ, the passes) is timed in one set of
interleaved rounds (medians), so slow drifts of the machine's load affect all alike. Greedy, fixed
decode length (eos_id None); the speculative tokens are checked equal to `generate`'s.

  python scripts/loop_overhead.py --checkpoint=specdec/assets/checkpoints/ende/target
  python scripts/loop_overhead.py --gammas 3 5 --alpha 0.8 --output /tmp/loop.json

With --draft=DIR (a saved T5Model or SharedEncoderDraft made for the target) the simulated draft
wraps that draft instead, so every draft step costs what the real draft's step costs while α stays
exactly --alpha, and the ideal adds what the draft's passes cost inside a jitted loop:

  fixed + calls × (pass(γ+1) + d(2) + (γ−1)·d(1)),

d(k) one k-token draft pass (each iteration feeds the draft a 2-token catch-up block, then γ − 1
single tokens). The overhead left is then what the real draft's steps cost in the decode beyond
their cost when timed back to back (e.g. its weights falling out of the CPU's caches during the
target's pass) plus the loop's bookkeeping.

Default model: scripts/verify_cost.py's random ~8M target (timing does not depend on weights).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import specdec  # noqa: E402
from specdec import T5Model, load_model, simulated, timing  # noqa: E402
from specdec.drafts import UnigramDraft  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_cost import TARGET  # noqa: E402  pylint: disable=g-import-not-at-top

PASS_STEPS = 16  # Target passes per timed call of a pass function.


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", help="A saved T5Model to use as the target.")
  parser.add_argument("--draft", help="A saved draft (T5Model or SharedEncoderDraft) whose cost "
                      "the simulated draft pays (default: a unigram draft, free).")
  parser.add_argument("--gammas", type=int, nargs="+", default=[3, 5, 7])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--decode_len", type=int, default=48, help="Tokens generated per row.")
  parser.add_argument("--source_len", type=int, default=32, help="Encoder input length.")
  parser.add_argument("--alpha", type=float, default=1.0, help="Simulated acceptance rate.")
  parser.add_argument("--draft_unroll", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=7, help="Interleaved timed rounds.")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--output", default="results/loop_overhead.json")
  args = parser.parse_args(argv)
  for name in ("batch", "decode_len", "source_len", "repeats", "draft_unroll"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive")
  if any(g < 1 for g in args.gammas):
    parser.error("--gammas must be >= 1")
  if not 0.0 <= args.alpha <= 1.0:
    parser.error("--alpha must be in [0, 1]")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  target = T5Model.load(args.checkpoint) if args.checkpoint else T5Model.init(TARGET, 0)
  length = args.decode_len
  prompts = timing.random_prompts(args.batch, args.source_len, target.vocab_size,
                                  seed=args.seed)
  common = dict(max_decode_len=length, eos_id=None)
  want = np.asarray(specdec.generate(target, prompts, **common).tokens)
  inner = (load_model(args.draft) if args.draft
           else UnigramDraft(jnp.zeros((target.vocab_size,), jnp.float32)))
  draft = simulated.simulate_acceptance(inner, want, alpha=args.alpha, seed=args.seed)
  spec = lambda gamma: specdec.speculative_generate(
      target, draft, prompts, gamma=gamma, draft_unroll=args.draft_unroll, **common)

  fns = {"baseline": lambda: specdec.generate(target, prompts, **common).tokens,
         "baseline_1": lambda: specdec.generate(target, prompts, max_decode_len=1,
                                                eos_id=None).tokens}
  for gamma in args.gammas:
    fns[("spec", gamma)] = (lambda g: lambda: spec(g).tokens)(gamma)
  passes = timing.loop_pass_fns(target, batch=args.batch, steps=PASS_STEPS,
                                sizes=[1] + [g + 1 for g in args.gammas],
                                position=length // 2, encoder_length=args.source_len,
                                seed=args.seed)
  for k, fn in passes.items():
    fns[("pass", k)] = fn
  if args.draft:  # The real draft's 1- and 2-token passes, timed in a loop like the target's.
    for k, fn in timing.loop_pass_fns(inner, target=target, batch=args.batch, steps=PASS_STEPS,
                                      sizes=[1, 2], position=length // 2,
                                      encoder_length=args.source_len, seed=args.seed).items():
      fns[("draft_pass", k)] = fn
  load_before = os.getloadavg()
  times = timing.interleaved_medians(fns, repeats=args.repeats)
  t1 = times[("pass", 1)] / PASS_STEPS
  fixed = max(times["baseline_1"] - t1, 0.0)
  base = times["baseline"]
  d1, d2 = ((times[("draft_pass", 1)] / PASS_STEPS, times[("draft_pass", 2)] / PASS_STEPS)
            if args.draft else (0.0, 0.0))
  print(f"target {target.num_params / 1e6:.1f}M params, batch {args.batch}, {length} tokens, "
        f"alpha {args.alpha}, medians of {args.repeats} interleaved rounds")
  print(f"baseline {base * 1e3 / length:.2f} ms/token; one-token pass {t1 * 1e3:.2f} ms; "
        f"fixed per decode {fixed * 1e3:.1f} ms")
  if args.draft:
    print(f"draft {args.draft}: one-token pass {d1 * 1e3:.3f} ms (c = {d1 / t1:.3f}), 2-token "
          f"pass {d2 * 1e3:.3f} ms (c2 = {d2 / t1:.3f})")
  print(f"{'gamma':>5} {'v':>5} {'calls':>5} {'speedup':>7} {'ideal':>6} {'efficiency':>10} "
        f"{'ms/iter':>8} {'pass ms':>8} {'draft ms':>8} {'overhead ms/iter':>16} {'same':>5}")
  rows = []
  for gamma in args.gammas:
    result = spec(gamma)
    calls = int(np.max(np.asarray(result.stats.target_calls)))
    same = bool(np.array_equal(np.asarray(result.tokens), want))
    pass_s = times[("pass", gamma + 1)] / PASS_STEPS
    draft_s = d2 + (gamma - 1) * d1  # 0 for the free draft: its steps count as overhead.
    measured = times[("spec", gamma)]
    ideal = fixed + calls * (pass_s + draft_s)
    row = {"gamma": gamma, "v": pass_s / t1, "target_calls": calls,
           "speedup": base / measured, "ideal_speedup": base / ideal,
           "efficiency": ideal / measured, "ms_per_iteration": (measured - fixed) / calls * 1e3,
           "pass_ms": pass_s * 1e3, "draft_ms_per_iteration": draft_s * 1e3,
           "overhead_ms_per_iteration": ((measured - fixed) / calls - pass_s - draft_s) * 1e3,
           "same_tokens_as_baseline": same, "alpha_realised": draft.alpha_realised}
    rows.append(row)
    print(f"{gamma:>5} {row['v']:>5.2f} {calls:>5} {row['speedup']:>6.2f}x "
          f"{row['ideal_speedup']:>5.2f}x {row['efficiency']:>10.1%} "
          f"{row['ms_per_iteration']:>8.2f} {row['pass_ms']:>8.2f} "
          f"{row['draft_ms_per_iteration']:>8.2f} "
          f"{row['overhead_ms_per_iteration']:>16.2f} {str(same):>5}")
  out = {"target_params": target.num_params, "checkpoint": args.checkpoint,
         "draft": args.draft, "draft_params": getattr(inner, "num_params", 0),
         "draft_pass_ms": {1: d1 * 1e3, 2: d2 * 1e3} if args.draft else None,
         "batch": args.batch, "decode_len": length, "source_len": args.source_len,
         "alpha": args.alpha, "draft_unroll": args.draft_unroll, "repeats": args.repeats,
         "baseline_ms_per_token": base * 1e3 / length, "one_token_pass_ms": t1 * 1e3,
         "fixed_ms": fixed * 1e3, "rows": rows, "machine": timing.machine_info(load_before)}
  print(timing.machine_line(out["machine"]))
  if args.output:
    timing.write_json(args.output, out)
  return out


if __name__ == "__main__":
  main()
