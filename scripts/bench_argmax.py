"""Times the greedy choice: specdec's chunked `sampling.argmax` against `jnp.argmax`.

Every greedy token (the baseline's steps, each draft step, the γ+1 rows of a greedy verify pass)
is one argmax over the vocabulary. Each measurement is a jitted loop of --steps argmaxes over
`[batch, rows, vocab]` logits, each depending on the last (so none is hoisted or skipped); the
figure is the median over --repeats runs / --steps, per call and per row of `vocab` logits.

  python scripts/bench_argmax.py                   # writes results/bench_argmax.json
  python scripts/bench_argmax.py --vocab_sizes 4096 32128 --shapes 1x1 1x5 8x5
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from specdec import sampling, timing  # noqa: E402

METHODS = {"specdec": sampling.argmax,
           "jnp_argmax": lambda x: jnp.argmax(x, axis=-1).astype(jnp.int32)}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--vocab_sizes", type=int, nargs="+", default=[4096, 32128])
  parser.add_argument("--shapes", nargs="+", default=["1x1", "1x5", "8x1", "8x5"],
                      help="BATCHxROWS: a draft or baseline step is Bx1, a verify pass Bx(γ+1).")
  parser.add_argument("--steps", type=int, default=200, help="Argmaxes per timed run.")
  parser.add_argument("--repeats", type=int, default=7, help="Timed runs (median).")
  parser.add_argument("--output", default="results/bench_argmax.json")
  args = parser.parse_args(argv)
  try:
    args.shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes]
  except ValueError:
    parser.error(f"--shapes must be BATCHxROWS, got {args.shapes}")
  if any(len(s) != 2 or min(s) < 1 for s in args.shapes):
    parser.error(f"--shapes must be BATCHxROWS with positive sizes, got {args.shapes}")
  for name in ("vocab_sizes",):
    if any(x < 1 for x in getattr(args, name)):
      parser.error(f"--{name} must be positive")
  for name in ("steps", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive")
  return args


def _loop(fn, steps: int):
  def run(logits):
    def body(_, carry):
      total, x = carry
      tokens = fn(x)
      # Next logits depend on this argmax (a tiny shift), so the steps run in order.
      return total + jnp.sum(tokens), x + (tokens[..., None] % 2).astype(x.dtype) * 1e-30
    return jax.lax.fori_loop(0, steps, body, (jnp.int32(0), logits))[0]
  return jax.jit(run)


def main(argv=None) -> dict:
  args = parse_args(argv)
  load_before = os.getloadavg()
  rows = []
  print(f"{'vocab':>6} {'shape':>6} {'specdec us':>11} {'jnp.argmax us':>14} {'ratio':>7}")
  for vocab in args.vocab_sizes:
    for batch, k in args.shapes:
      logits = jax.random.normal(jax.random.PRNGKey(vocab + batch + k), (batch, k, vocab))
      want = np.asarray(jnp.argmax(logits, axis=-1))
      if not np.array_equal(np.asarray(jax.jit(sampling.argmax)(logits)), want):
        raise SystemExit(f"sampling.argmax differs from jnp.argmax at {(batch, k, vocab)}")
      us = {}
      for name, fn in METHODS.items():
        loop = _loop(fn, args.steps)
        us[name] = timing.median_seconds(lambda: loop(logits), repeats=args.repeats) \
            / args.steps * 1e6
      ratio = us["jnp_argmax"] / us["specdec"]
      print(f"{vocab:>6} {f'{batch}x{k}':>6} {us['specdec']:>11.1f} {us['jnp_argmax']:>14.1f} "
            f"{ratio:>6.1f}x")
      rows.append({"vocab_size": vocab, "batch": batch, "rows": k,
                   "us_per_call_specdec": us["specdec"], "us_per_call_jnp_argmax":
                   us["jnp_argmax"], "us_per_row_specdec": us["specdec"] / (batch * k),
                   "us_per_row_jnp_argmax": us["jnp_argmax"] / (batch * k),
                   "jnp_over_specdec": ratio})
  result = {"steps": args.steps, "repeats": args.repeats, "rows": rows,
            "machine": timing.machine_info(load_before)}
  if args.output:
    timing.write_json(args.output, result)
  return result


if __name__ == "__main__":
  main()
