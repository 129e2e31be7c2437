"""Measures the verify cost v(γ) and the cost coefficient c on this machine.

  v(γ) = time of one (γ+1)-token target pass / time of one 1-token target pass (γ = 1..8),
  c    = time of one draft step / time of one target step.

Both through the cached `extend` the decoders use, on a cache holding --position tokens,
medians of --repeats runs after a compile run (see `specdec.timing`). The paper's Theorem 3.8
assumes v = 1; `specdec.analysis.walltime_improvement(..., verify_cost=v)` takes the measured v.

  python scripts/verify_cost.py                        # writes results/verify_cost.json
  python scripts/verify_cost.py --batch_sizes 1 --repeats 20 --output /tmp/v.json
  python scripts/verify_cost.py --checkpoint runs/target --draft_checkpoint runs/draft

Default models are random (timing does not depend on the weights): a ~8M-parameter v1.1 target
(vocab 4096, 256 wide, 3 + 3 layers) and a v1.0-style draft (128 wide, 2 + 1 layers). Other
processes competing for the CPU inflate the timings; the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

from specdec import T5Config, T5Model, analysis, timing  # noqa: E402

TARGET = T5Config(vocab_size=4096, emb_dim=256, num_heads=4, head_dim=64, mlp_dim=768,
                  num_encoder_layers=3, num_decoder_layers=3)
DRAFT = T5Config(vocab_size=4096, emb_dim=128, num_heads=4, head_dim=32, mlp_dim=256,
                 num_encoder_layers=2, num_decoder_layers=1, logits_via_embedding=True)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--gammas", type=int, nargs="+", default=list(range(1, 9)))
  parser.add_argument("--position", type=int, default=64,
                      help="Decoder tokens already in the cache.")
  parser.add_argument("--source_len", type=int, default=32, help="Encoder input length.")
  parser.add_argument("--repeats", type=int, default=50, help="Timed runs per pass (median).")
  parser.add_argument("--checkpoint", help="A saved T5Model (T5Model.save) to use as target.")
  parser.add_argument("--draft_checkpoint", help="A saved T5Model to use as draft.")
  parser.add_argument("--output", default="results/verify_cost.json")
  args = parser.parse_args(argv)
  if any(b < 1 for b in args.batch_sizes):
    parser.error("--batch_sizes must be positive")
  if any(g < 1 for g in args.gammas):
    parser.error("--gammas must be >= 1")
  for name in ("repeats", "source_len"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive")
  if args.position < 0:
    parser.error("--position must be >= 0")
  return args


def main(argv=None) -> dict:
  args = parse_args(argv)
  target = T5Model.load(args.checkpoint) if args.checkpoint else T5Model.init(TARGET, 0)
  draft = (T5Model.load(args.draft_checkpoint) if args.draft_checkpoint
           else T5Model.init(DRAFT.replace(vocab_size=target.vocab_size), 1))
  load_before = os.getloadavg()
  rows = []
  summary = {}
  print(f"target {target.num_params / 1e6:.1f}M params, draft {draft.num_params / 1e6:.2f}M; "
        f"position {args.position}, median of {args.repeats}; {jax.devices()[0].platform}")
  for batch in args.batch_sizes:
    sizes = [1] + [g + 1 for g in args.gammas]
    times = timing.measure_block_times(target, batch=batch, sizes=sizes,
                                       position=args.position, repeats=args.repeats,
                                       encoder_length=args.source_len)
    c = timing.measure_cost_ratio(target, draft, batch=batch, position=args.position,
                                  repeats=args.repeats, encoder_length=args.source_len)
    v = {g: times[g + 1] / times[1] for g in args.gammas}
    summary[batch] = {"c": c, "v": v, "step_ms": times[1] * 1e3}
    print(f"\nbatch {batch}: 1-token target pass {times[1] * 1e3:.3f} ms, c = {c:.3f}")
    print(f"{'gamma':>5} {'pass ms':>9} {'v(gamma)':>9} {'v/(g+1)':>8}  "
          f"{'speedup a=1 (paper v=1)':>24} {'speedup a=1 (measured v)':>25}")
    for g in args.gammas:
      paper = analysis.walltime_improvement(1.0, g, c)
      measured = analysis.walltime_improvement(1.0, g, c, verify_cost=v[g])
      print(f"{g:>5} {times[g + 1] * 1e3:>9.3f} {v[g]:>9.3f} {v[g] / (g + 1):>8.3f}  "
            f"{paper:>24.2f} {measured:>25.2f}")
      rows.append({"batch": batch, "gamma": g, "pass_ms": times[g + 1] * 1e3,
                   "one_token_ms": times[1] * 1e3, "v": v[g], "c": c,
                   "speedup_alpha1_paper": paper, "speedup_alpha1_measured_v": measured})
  result = {
      "target_params": target.num_params, "draft_params": draft.num_params,
      "target_config": str(target.config), "draft_config": str(draft.config),
      "position": args.position, "source_len": args.source_len, "repeats": args.repeats,
      "rows": rows, "summary": {str(b): s for b, s in summary.items()},
      "machine": timing.machine_info(load_before),
  }
  if args.output:
    timing.write_json(args.output, result)
  return result


if __name__ == "__main__":
  main()
