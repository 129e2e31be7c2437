"""Tokens/s of batch-32 speculative decoding on 1, 2, 4, 8 (simulated) devices.

  python scripts/mesh_scaling.py [--devices 8] [--output results/mesh_scaling.json]

On a CPU host the devices are simulated (`--xla_force_host_platform_device_count`, set here before
JAX starts), so they share the host's cores: the curve measures the partitioning overhead
(collectives, smaller per-device kernels), not a speedup. On a GPU/TPU host pass `--real` to use
the real devices. Greedy, the target as its own draft (every draft token accepted, so each run does
the same work), γ = 4, `eos_id=None` (exactly batch × max_decode_len tokens per run); tokens/s is
the median (and best) of `--repeats` timed runs after a compile-and-warm-up run; on a shared host
the best run is the better estimate of the uncontended rate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args():
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--real", action="store_true", help="use the real accelerators")
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--gamma", type=int, default=4)
  p.add_argument("--max_decode_len", type=int, default=32)
  p.add_argument("--input_length", type=int, default=32)
  p.add_argument("--repeats", type=int, default=10)
  p.add_argument("--config", default="mini",
                 help="'mini' (a 2+2-layer, 128-wide T5) or a T5Config preset name")
  p.add_argument("--meshes", default="1x1,2x1,4x1,8x1,1x2,1x4,1x8,4x2,2x4")
  p.add_argument("--output", default="results/mesh_scaling.json")
  return p.parse_args()


MINI = dict(vocab_size=512, emb_dim=128, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
            head_dim=32, mlp_dim=256)


def main():
  args = parse_args()
  if not args.real:
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import specdec  # pylint: disable=g-import-not-at-top
  from specdec import T5Config, T5Model, partitioning  # pylint: disable=g-import-not-at-top

  config = T5Config(**MINI) if args.config == "mini" else T5Config.preset(args.config)
  target = T5Model.init(config, 0)
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, config.vocab_size, (args.batch, args.input_length)).astype(np.int32)
  results = []
  for text in args.meshes.split(","):
    data, model = partitioning.parse_mesh(text)
    n = data * model
    if n > jax.device_count():
      continue
    mesh = partitioning.make_mesh(data, model, devices=jax.devices()[:n])
    t = partitioning.shard_params(target, mesh)
    x = partitioning.shard_batch(tokens, mesh)

    def run():
      out = specdec.speculative_generate(t, t, x, gamma=args.gamma,
                                         max_decode_len=args.max_decode_len, eos_id=None)
      return jax.block_until_ready(out)

    start = time.perf_counter()
    out = run()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
    generated = args.batch * args.max_decode_len
    median = statistics.median(times)
    row = {"mesh": text, "devices": n, "data": data, "model": model,
           "compile_and_first_run_s": round(first, 3), "times_s": [round(s, 4) for s in times],
           "tokens_per_s": round(generated / median, 1),
           "tokens_per_s_best": round(generated / min(times), 1),
           "target_calls_per_row": float(np.asarray(out.stats.target_calls).mean())}
    results.append(row)
    print(json.dumps(row), flush=True)
  report = {
      "what": "batch-%d speculative decoding, target as draft, greedy, gamma=%d, %d tokens/row"
              % (args.batch, args.gamma, args.max_decode_len),
      "config": config.__dict__ if args.config != "mini" else MINI,
      "platform": jax.devices()[0].platform, "simulated": not args.real,
      "host_cpus": os.cpu_count(), "jax": jax.__version__,
      "note": ("simulated CPU devices share the host's cores: this measures SPMD overhead, "
               "not speedup") if not args.real else "",
      "results": results,
  }
  report["config"] = dict(report["config"])
  if "mlp_activations" in report["config"]:
    report["config"]["mlp_activations"] = list(report["config"]["mlp_activations"])
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(report, f, indent=2)


if __name__ == "__main__":
  main()
