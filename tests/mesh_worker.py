"""Runs the mesh checks of `test_partitioning.py` in a process with 8 simulated CPU devices.

`python tests/mesh_worker.py decode|train [tmpdir]` prints one JSON object (the last line of
stdout) that the test asserts on. The parent sets `XLA_FLAGS=--xla_force_host_platform_device_
count=8` before this process imports JAX; the single-device references are computed here too, on
`jax.devices()[0]` alone, so both sides run the same JAX build and flags.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import TINY, TINY_DRAFT  # tests/ is sys.path[0] when run as a script.

from specdec import T5Model, partitioning, speculative_generate  # noqa: E402
from specdec import decoding, sampling as sampling_lib, speculative  # noqa: E402

MESHES = ((8, 1), (4, 2), (2, 4), (1, 8))
SAMPLINGS = (sampling_lib.Sampling(0.0), sampling_lib.Sampling(temperature=1.0))
GAMMA, MAX_LEN = 3, 10


def encoder_inputs(batch: int = 8, length: int = 6, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, TINY.vocab_size, (batch, length)).astype(np.int32)
  for b in range(batch):  # Different amounts of padding per row.
    tokens[b, length - b % 3:] = 0
  return tokens


@jax.jit
def decode_all(target, draft, tokens, rng):
  """generate and speculative_generate, greedy and sampled: one program per mesh to compile.

  These are the very jitted functions the public entry points call; nesting them under one jit
  only saves XLA compile time (4 programs → 1), it does not change what they compute.
  """
  out = {}
  for s in SAMPLINGS:
    name = "greedy" if s.greedy else "sampled"
    out["generate_" + name] = decoding._generate(  # pylint: disable=protected-access
        target, tokens, rng, max_decode_len=MAX_LEN, sampling=s, eos_id=1).tokens
    out["speculative_" + name] = speculative._speculative_generate(  # pylint: disable=protected-access
        target, draft, tokens, rng, gamma=GAMMA, max_decode_len=MAX_LEN, sampling=s,
        eos_id=1).tokens
  return out


def spec_of(x) -> list:
  return [a if a is None or isinstance(a, str) else list(a) for a in x.sharding.spec]


def decode_checks() -> dict:
  target, draft = T5Model.init(TINY, 0), T5Model.init(TINY_DRAFT, 1)
  tokens, rng = encoder_inputs(), jax.random.PRNGKey(7)
  device0 = jax.devices()[0]
  ref = decode_all(*jax.device_put((target, draft, tokens, rng), device0))
  ref = {k: np.asarray(v) for k, v in ref.items()}
  report = {"devices": jax.device_count(), "reference_devices": 1, "meshes": {}}
  for shape in MESHES:
    mesh = partitioning.make_mesh(*shape)
    t = partitioning.shard_params(target, mesh)
    d = partitioning.replicate(draft, mesh)
    x = partitioning.shard_batch(tokens, mesh, vocab_size=TINY.vocab_size)
    out = decode_all(t, d, x, rng)
    layer = t.params["decoder"]["layers_0"]
    wi = layer["mlp"]["wi_0"]["kernel"]
    report["meshes"]["x".join(map(str, shape))] = {
        "equal": {k: bool(np.array_equal(np.asarray(out[k]), ref[k])) for k in ref},
        "tokens_spec": spec_of(out["speculative_sampled"]),
        "specs": {
            "mlp_wi": spec_of(wi),
            "mlp_wo": spec_of(layer["mlp"]["wo"]["kernel"]),
            "query": spec_of(layer["self_attention"]["query"]["kernel"]),
            "out": spec_of(layer["self_attention"]["out"]["kernel"]),
            "logits_dense": spec_of(t.params["decoder"]["logits_dense"]["kernel"]),
            "rel_embedding": spec_of(t.params["decoder"]["relpos_bias"]["rel_embedding"]),
            "layer_norm": spec_of(layer["pre_mlp_layer_norm"]["scale"]),
            "draft_wi": spec_of(draft_wi(d)),
            "batch": spec_of(x),
        },
        "mlp_wi_shard_shapes": sorted({tuple(s.data.shape) for s in wi.addressable_shards}),
        "mlp_wi_shard_devices": len({s.device for s in wi.addressable_shards}),
        "mlp_wi_shape": list(wi.shape),
    }
  # The public entry point itself, with sharded inputs: sharded outputs and per-row stats, one
  # program with the loop inside (no host callback in the lowered module).
  mesh = partitioning.make_mesh(2, 4)
  t, d = partitioning.shard_params(target, mesh), partitioning.replicate(draft, mesh)
  x = partitioning.shard_batch(tokens, mesh)
  result = speculative_generate(t, d, x, gamma=GAMMA, max_decode_len=MAX_LEN, temperature=1.0,
                                rng=rng)
  hlo = speculative._speculative_generate.lower(  # pylint: disable=protected-access
      t, d, x, rng, gamma=GAMMA, max_decode_len=MAX_LEN, sampling=SAMPLINGS[1],
      eos_id=1).as_text()
  report["public"] = {
      "equal": bool(np.array_equal(np.asarray(result.tokens), ref["speculative_sampled"])),
      "tokens_spec": spec_of(result.tokens),
      "accepted_spec": spec_of(result.stats.accepted),
      "target_calls_spec": spec_of(result.stats.target_calls),
      "hlo_has_while": "stablehlo.while" in hlo,
      "hlo_has_callback": "callback" in hlo.lower(),
  }
  return report


def draft_wi(draft):
  return draft.params["decoder"]["layers_0"]["mlp"]["wi"]["kernel"]


def train_checks(tmpdir: str) -> dict:
  from specdec import training  # pylint: disable=g-import-not-at-top
  schedule = training.make_schedule(schedule="constant", learning_rate=1e-2, warmup_steps=0,
                                    total_steps=10)
  # SGD with momentum: the update is linear in the gradient, so params differ by lr x (gradient
  # rounding) only. (AdamW's first step is ~lr * sign(g) and turns a 1e-9 difference in a ~0
  # gradient entry into an lr-sized one.) The momentum trace is sharded like the params.
  trainer = training.Trainer(TINY, optax.sgd(schedule, momentum=0.9), schedule=schedule)
  state = trainer.init_state(T5Model.init(TINY, 0).params)
  rng = np.random.default_rng(1)
  batch = {"inputs": encoder_inputs(8, 8, seed=2),
           "targets": rng.integers(2, TINY.vocab_size, (8, 8)).astype(np.int32)}
  batch["targets"][:, 6:] = 0
  batch["targets"][::2, 5] = 1
  device0 = jax.devices()[0]
  ref_state, ref_metrics = trainer.train_step(*jax.device_put((state, batch), device0))

  mesh = partitioning.make_mesh(2, 4)
  sharded = partitioning.shard_state(state, TINY, mesh)
  sbatch = {k: partitioning.shard_batch(v, mesh) for k, v in batch.items()}
  new_state, metrics = trainer.train_step(sharded, sbatch)
  expected = partitioning.state_shardings(new_state, TINY, mesh)

  def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

  def max_scale(a):
    return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree_util.tree_leaves(a))

  same_shardings = all(
      x.sharding.is_equivalent_to(s, x.ndim) for x, s in zip(
          jax.tree_util.tree_leaves(new_state), jax.tree_util.tree_leaves(expected)))
  trace_wi = [x for path, x in jax.tree_util.tree_flatten_with_path(new_state.opt_state)[0]
           if "trace" in jax.tree_util.keystr(path) and "layers_0']['mlp']['wi_0']['kernel"
           in jax.tree_util.keystr(path) and "decoder" in jax.tree_util.keystr(path)][0]
  report = {
      "loss": float(metrics["loss"]), "ref_loss": float(ref_metrics["loss"]),
      "grad_norm": float(metrics["grad_norm"]), "ref_grad_norm": float(ref_metrics["grad_norm"]),
      "params_max_diff": max_diff(new_state.params, ref_state.params),
      "params_update_scale": max_diff(ref_state.params, state.params),
      "params_scale": max_scale(ref_state.params),
      "opt_state_max_diff": max_diff(new_state.opt_state, ref_state.opt_state),
      "step": int(new_state.step),
      "same_shardings": same_shardings,
      "wi_spec": spec_of(new_state.params["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]),
      "trace_wi_spec": spec_of(trace_wi),
  }

  # Save sharded on (2, 4); restore straight into a different mesh's shardings, (4, 2).
  ckpt = training.Checkpoints(os.path.join(tmpdir, "ckpt"))
  ckpt.save(new_state)
  mesh2 = partitioning.make_mesh(4, 2)
  target = partitioning.abstract_sharded(
      new_state, partitioning.state_shardings(new_state, TINY, mesh2))
  restored = ckpt.restore(target)
  ckpt.close()
  restored_wi = restored.params["decoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
  report.update(
      restored_max_diff=max_diff(restored, new_state),
      restored_wi_spec=spec_of(restored_wi),
      restored_wi_mesh=dict(restored_wi.sharding.mesh.shape),
      restored_wi_shard_shape=list(restored_wi.addressable_shards[0].data.shape))
  # The plain helpers too (no CheckpointManager).
  partitioning.save_sharded(os.path.join(tmpdir, "params"), new_state.params)
  params = partitioning.restore_sharded(
      os.path.join(tmpdir, "params"),
      partitioning.abstract_sharded(new_state.params,
                                    partitioning.param_shardings(TINY, mesh2)))
  report["restored_params_max_diff"] = max_diff(params, new_state.params)
  report["restored_params_spec"] = spec_of(
      params["decoder"]["layers_0"]["self_attention"]["query"]["kernel"])
  return report


if __name__ == "__main__":
  mode = sys.argv[1]
  result = decode_checks() if mode == "decode" else train_checks(sys.argv[2])
  print(json.dumps(result))
