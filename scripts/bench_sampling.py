"""Times one sampled token: specdec's inverse-CDF `sampling.draw` against the Gumbel-max trick.

Every sampled token (baseline steps, draft steps, the residual draw after a rejection) is one
draw over the vocabulary, so at T > 0 this cost sits in every step of both decoders. Each
measurement is a jitted loop of --draws draws (one key each, folded from the loop index) over a
fixed softmax distribution; the reported figure is the median over --repeats runs / --draws.

  python scripts/bench_sampling.py                      # writes results/bench_sampling.json
  python scripts/bench_sampling.py --vocab_sizes 4096 32128 --batch_sizes 1 8
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

from specdec import sampling, timing  # noqa: E402


def gumbel_rows(keys, probs):
  """The Gumbel-max draw `jax.random.categorical` makes (what specdec used before `draw`)."""
  return jax.vmap(lambda k, p: jax.random.categorical(k, jnp.log(p)))(keys, probs)


METHODS = {"inverse_cdf": sampling.sample_rows, "gumbel_max": gumbel_rows}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--vocab_sizes", type=int, nargs="+", default=[4096, 32128])
  parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
  parser.add_argument("--draws", type=int, default=100, help="Draws per timed run.")
  parser.add_argument("--repeats", type=int, default=7, help="Timed runs (median).")
  parser.add_argument("--output", default="results/bench_sampling.json")
  args = parser.parse_args(argv)
  for name in ("vocab_sizes", "batch_sizes"):
    if any(x < 1 for x in getattr(args, name)):
      parser.error(f"--{name} must be positive")
  for name in ("draws", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be positive")
  return args


def _loop(rows_fn, draws: int):
  def run(key, probs):
    def body(i, total):
      keys = jax.random.split(jax.random.fold_in(key, i), probs.shape[0])
      return total + jnp.sum(rows_fn(keys, probs))
    return jax.lax.fori_loop(0, draws, body, jnp.int32(0))
  return jax.jit(run)


def main(argv=None) -> dict:
  args = parse_args(argv)
  load_before = os.getloadavg()
  rows = []
  print(f"{'vocab':>6} {'batch':>5} {'inverse_cdf us':>15} {'gumbel_max us':>14} {'ratio':>7}")
  for vocab in args.vocab_sizes:
    for batch in args.batch_sizes:
      logits = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (batch, vocab))
      probs = jax.nn.softmax(logits, axis=-1)
      key = jax.random.PRNGKey(1)
      us = {}
      for name, fn in METHODS.items():
        loop = _loop(fn, args.draws)
        seconds = timing.median_seconds(lambda: loop(key, probs), repeats=args.repeats)
        us[name] = seconds / args.draws * 1e6
      ratio = us["gumbel_max"] / us["inverse_cdf"]
      print(f"{vocab:>6} {batch:>5} {us['inverse_cdf']:>15.1f} {us['gumbel_max']:>14.1f} "
            f"{ratio:>6.1f}x")
      rows.append({"vocab_size": vocab, "batch": batch, "us_per_draw_inverse_cdf":
                   us["inverse_cdf"], "us_per_draw_gumbel_max": us["gumbel_max"],
                   "gumbel_over_inverse_cdf": ratio})
  result = {"draws": args.draws, "repeats": args.repeats, "rows": rows,
            "machine": timing.machine_info(load_before)}
  if args.output:
    timing.write_json(args.output, result)
  return result


if __name__ == "__main__":
  main()
