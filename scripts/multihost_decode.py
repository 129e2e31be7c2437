"""Sharded (speculative) decoding over a ('data', 'model') mesh, on one or many hosts.

Every process runs the same command (SPMD). On one host:

  python scripts/multihost_decode.py --mesh 2x4 --target_checkpoint /ckpt/target \\
      --draft_checkpoint /ckpt/draft --batch 64 --gamma 4

On N hosts (GPU clusters; Cloud TPU, SLURM and Open MPI are detected without the flags):

  python scripts/multihost_decode.py --coordinator_address host0:1234 --num_processes N \\
      --process_id I --mesh 8x4 ...

Each process builds its own rows of the batch (here: rows I*B/N .. (I+1)*B/N of a seeded random
batch, or of `--inputs_file`, one line of space-separated token ids per row), the target is
sharded by `specdec.partitioning.DEFAULT_RULES`, the draft replicated, and the outputs are
gathered on every process; process 0 writes `--output` (JSON). `--check` also decodes the whole
batch on process 0's first device alone and records whether the tokens are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from specdec import partitioning  # noqa: E402  (imports jax, touches no device)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  partitioning.add_distributed_flags(p)
  p.add_argument("--target_checkpoint", help="a T5Model.save directory")
  p.add_argument("--target_config", default="t5_1_1_small",
                 help="preset name or JSON of T5Config fields (random init; without checkpoint)")
  p.add_argument("--draft_checkpoint")
  p.add_argument("--draft_config", default=None,
                 help="preset name / JSON (random init); 'target' = target as draft; "
                      "omit (and --draft_checkpoint) to run plain generate")
  p.add_argument("--shard_draft", action="store_true",
                 help="shard the draft by the rules too (default: replicated)")
  p.add_argument("--batch", type=int, default=32, help="global batch (rows over all processes)")
  p.add_argument("--input_length", type=int, default=16)
  p.add_argument("--inputs_file", default=None)
  p.add_argument("--max_decode_len", type=int, default=32)
  p.add_argument("--gamma", type=int, default=4)
  p.add_argument("--temperature", type=float, default=0.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--repeats", type=int, default=0, help="timed runs after the first")
  p.add_argument("--check", action="store_true")
  p.add_argument("--output", default=None)
  return p.parse_args(argv)


def build_model(checkpoint, config_text, seed):
  from specdec import T5Config, T5Model  # pylint: disable=g-import-not-at-top
  if checkpoint:
    return T5Model.load(checkpoint)
  if config_text.strip().startswith("{"):
    config = T5Config(**json.loads(config_text))
  else:
    config = T5Config.preset(config_text)
  return T5Model.init(config, seed)


def global_inputs(args, vocab_size):
  import numpy as np  # pylint: disable=g-import-not-at-top
  if args.inputs_file:
    with open(args.inputs_file) as f:
      rows = [[int(t) for t in line.split()] for line in f if line.strip()]
    if len(rows) < args.batch:
      raise ValueError(f"--inputs_file has {len(rows)} rows, --batch is {args.batch}")
    length = max(len(r) for r in rows[:args.batch])
    out = np.zeros((args.batch, length), np.int32)
    for i, r in enumerate(rows[:args.batch]):
      out[i, :len(r)] = r
    return out
  rng = np.random.default_rng(args.seed)
  out = rng.integers(2, vocab_size, (args.batch, args.input_length)).astype(np.int32)
  for b in range(args.batch):
    out[b, args.input_length - b % 4:] = 0
  return out


def main(argv=None):
  args = parse_args(argv)
  partitioning.initialize_distributed(args.coordinator_address, args.num_processes,
                                      args.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import specdec  # pylint: disable=g-import-not-at-top

  n, pid = jax.process_count(), jax.process_index()
  if args.batch % n:
    raise ValueError(f"--batch {args.batch} is not divisible by the {n} processes")
  data, model = partitioning.parse_mesh(args.mesh)
  mesh = partitioning.make_mesh(data, model)

  target = build_model(args.target_checkpoint, args.target_config, args.seed)
  draft = None
  if args.draft_checkpoint or args.draft_config:
    draft = (target if args.draft_config == "target" and not args.draft_checkpoint
             else build_model(args.draft_checkpoint, args.draft_config, args.seed + 1))
  tokens = global_inputs(args, target.vocab_size)
  per_process = args.batch // n
  local = tokens[pid * per_process:(pid + 1) * per_process]  # This process's rows only.

  sharded_target = partitioning.shard_params(target, mesh)
  sharded_draft = None if draft is None else (
      partitioning.shard_params(draft, mesh) if args.shard_draft
      else partitioning.replicate(draft, mesh))
  inputs = partitioning.shard_batch(local, mesh, vocab_size=target.vocab_size)
  rng = jax.random.PRNGKey(args.seed)
  options = dict(max_decode_len=args.max_decode_len, temperature=args.temperature,
                 rng=rng if args.temperature > 0 else None)

  def decode(t, d, x):
    if d is None:
      return specdec.generate(t, x, **options), None
    result = specdec.speculative_generate(t, d, x, gamma=args.gamma, **options)
    return result, result.stats

  start = time.perf_counter()
  result, stats = decode(sharded_target, sharded_draft, inputs)
  jax.block_until_ready(result)
  first_s = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    jax.block_until_ready(decode(sharded_target, sharded_draft, inputs))
    times.append(time.perf_counter() - start)

  out_tokens = partitioning.gather(result.tokens)  # On every process (a collective).
  out_stats = None if stats is None else partitioning.gather(stats)
  report = {
      "process_count": n, "device_count": jax.device_count(),
      "local_device_count": jax.local_device_count(), "mesh": dict(mesh.shape),
      "batch": args.batch, "rows_per_process": per_process,
      "mode": "generate" if draft is None else "speculative", "gamma": args.gamma,
      "first_call_s": first_s, "times_s": times,
      "tokens_spec": [a if a is None or isinstance(a, str) else list(a)
                      for a in result.tokens.sharding.spec],
      "tokens": np.asarray(out_tokens).tolist(),
  }
  if out_stats is not None:
    report["summary"] = out_stats.summary()
  if args.check and pid == 0:
    device0 = jax.local_devices()[0]
    ref_target, ref_draft = jax.device_put((target, draft), device0)
    ref, _ = decode(ref_target, ref_draft, jax.device_put(tokens, device0))
    report["reference_tokens"] = np.asarray(ref.tokens).tolist()
    report["matches_single_device"] = bool(np.array_equal(np.asarray(ref.tokens), out_tokens))
  if pid == 0:
    text = json.dumps(report)
    if args.output:
      os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
      with open(args.output, "w") as f:
        f.write(text)
    else:
      print(text)
  return report


if __name__ == "__main__":
  main()
