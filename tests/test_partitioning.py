"""Sharding over a ('data', 'model') mesh: rules, placement, exact sharded decoding, sharded
training and checkpoints, and two-process decoding.

The mesh checks need 8 devices, but this pytest process already initialised JAX with one CPU
device, so they run in subprocesses with `--xla_force_host_platform_device_count=8`
(`tests/mesh_worker.py`), or as two `jax.distributed` processes of 4 devices each
(`scripts/multihost_decode.py`, gloo CPU collectives on localhost). Each returns a JSON report
that the tests assert on; the single-device references are computed in the same subprocess.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import TINY, TINY_DRAFT
from specdec import T5Config, partitioning
from specdec.model import config_to_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
TIMEOUT_S = 900  # Generous: the machine is shared; the checks take ~1 CPU-minute each.


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env.update(
      XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} "
                "--xla_cpu_multi_thread_eigen=false",
      JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1", TF_CPP_MIN_LOG_LEVEL="3",
      PYTHONPATH=os.pathsep.join([ROOT, TESTS, env.get("PYTHONPATH", "")]))
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(var, None)
  return env


def _run_worker(*args: str) -> dict:
  proc = subprocess.run([sys.executable, os.path.join(TESTS, "mesh_worker.py"), *args],
                        env=_env(8), capture_output=True, text=True, timeout=TIMEOUT_S,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# --- rules and placement (this process, one device) ----------------------------------------------

class _Mesh:  # Just `.shape`, for rule checks without devices.
  def __init__(self, data, model):
    self.shape = {"data": data, "model": model}


def test_rules_map_logical_names_like_t5x():
  spec = partitioning.logical_to_mesh_spec
  assert spec(P("embed", "mlp")) == P(None, "model")
  assert spec(P("mlp", "embed")) == P("model", None)
  assert spec(P("embed", "joined_kv")) == P(None, "model")
  assert spec(P("vocab", "embed")) == P("model", None)
  assert spec(P("heads", "relpos_buckets")) == P("model", None)
  assert spec(P("batch", "length")) == P("data", None)
  assert spec(P("embed",)) == P(None)


def test_rules_replicate_dimensions_the_mesh_axis_does_not_divide():
  spec = partitioning.logical_to_mesh_spec
  # 2 heads on a 4-way 'model' axis: replicated; 8 heads: sharded.
  assert spec(P("heads", "relpos_buckets"), shape=(2, 32), mesh=_Mesh(1, 4)) == P(None, None)
  assert spec(P("heads", "relpos_buckets"), shape=(8, 32), mesh=_Mesh(1, 4)) == P("model", None)
  # One mesh axis at most once per array (the first dimension that asks for it gets it).
  assert spec(P("mlp", "vocab"), shape=(8, 8), mesh=_Mesh(1, 2)) == P("model", None)


def test_rules_reject_unknown_names_and_axes():
  with pytest.raises(ValueError, match="no partitioning rule for logical axis 'bogus'"):
    partitioning.logical_to_mesh_spec(P("bogus"))
  with pytest.raises(ValueError, match="unknown mesh axis 'tensor'"):
    partitioning.logical_to_mesh_spec(P("mlp"), rules=(("mlp", "tensor"),))
  with pytest.raises(TypeError, match="rules must be"):
    partitioning.logical_to_mesh_spec(P("mlp"), rules=("mlp",))


def test_every_parameter_has_a_rule(tiny_target):
  specs = jax.tree_util.tree_leaves(partitioning.param_specs(TINY),
                                    is_leaf=lambda x: isinstance(x, P))
  assert len(specs) == len(jax.tree_util.tree_leaves(tiny_target.params))
  assert P(None, "model") in specs and P("model", None) in specs


def test_make_mesh_validates_sizes():
  mesh = partitioning.make_mesh(1, 1)
  assert mesh.axis_names == ("data", "model") and dict(mesh.shape) == {"data": 1, "model": 1}
  assert dict(partitioning.make_mesh().shape) == {"data": jax.device_count(), "model": 1}
  with pytest.raises(ValueError, match="needs 2 devices"):
    partitioning.make_mesh(2, 1)
  with pytest.raises(ValueError, match="model must be >= 1"):
    partitioning.make_mesh(1, 0)
  with pytest.raises(TypeError, match="data must be an int"):
    partitioning.make_mesh(1.5, 1)
  assert partitioning.parse_mesh("4x2") == (4, 2)
  assert partitioning.parse_mesh(None) == (None, 1)
  with pytest.raises(ValueError, match="--mesh"):
    partitioning.parse_mesh("4-2")


def test_placement_on_a_one_device_mesh_keeps_values(tiny_target):
  mesh = partitioning.make_mesh(1, 1)
  placed = partitioning.shard_params(tiny_target, mesh)
  for a, b in zip(jax.tree_util.tree_leaves(placed.params),
                  jax.tree_util.tree_leaves(tiny_target.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.sharding.mesh.shape == mesh.shape
  tokens = partitioning.shard_batch(np.array([[3, 4, 0]]), mesh, vocab_size=TINY.vocab_size)
  assert tokens.dtype == np.int32 and tokens.sharding.spec == P("data", None)
  with pytest.raises(TypeError, match="model must be a T5Model"):
    partitioning.shard_params(tiny_target.params, mesh)
  with pytest.raises(ValueError, match=r"ids outside \[0, 32\)"):
    partitioning.shard_batch(np.array([[3, 40]]), mesh, vocab_size=TINY.vocab_size)
  with pytest.raises(TypeError, match="integer dtype"):
    partitioning.shard_batch(np.array([[0.5]]), mesh)


def test_initialize_distributed_is_a_no_op_for_one_process(monkeypatch):
  for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
              "TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"):
    monkeypatch.delenv(var, raising=False)
  assert partitioning.initialize_distributed() is False
  assert partitioning.initialize_distributed("localhost:1", 1, 0) is False
  with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\)"):
    partitioning.initialize_distributed("localhost:1", 2, 2)
  with pytest.raises(ValueError, match="needs num_processes and process_id"):
    partitioning.initialize_distributed("localhost:1")


# --- memory accounting ---------------------------------------------------------------------------

@pytest.mark.parametrize("config", [TINY, TINY_DRAFT, T5Config.preset("t5_1_1_small")],
                         ids=["tiny", "tiny_draft", "small"])
def test_memory_per_device_on_one_device_is_the_whole_model_and_cache(config):
  b, l, s = 4, 16, 12
  mem = partitioning.memory_per_device(config, (1, 1), b, l, "float32", encoder_length=s,
                                       cache_dtype="float32")
  assert mem["params"] == 4 * config.num_params
  kv = config.num_decoder_layers * b * config.num_heads * config.head_dim
  assert mem["self_cache"] == 4 * 2 * kv * l
  assert mem["cross_cache"] == 4 * 2 * kv * s + b * (s + 4)
  bf16 = partitioning.memory_per_device(config, (1, 1), b, l, "bfloat16", encoder_length=s)
  assert bf16["params"] == mem["params"] // 2


def test_memory_per_device_splits_by_the_rules():
  xxl = T5Config.preset("t5_1_1_xxl")
  whole = partitioning.memory_per_device(xxl, (1, 1), 32, 256, "bfloat16")
  split = partitioning.memory_per_device(xxl, (4, 8), 32, 256, "bfloat16")
  # Everything but the layer norms and relative-position biases is split 8 ways over 'model'
  # (64 heads, 10240 mlp, 32128 vocab all divide by 8); 'data' splits only the cache.
  norms = 2 * xxl.emb_dim * (xxl.num_encoder_layers * 2 + xxl.num_decoder_layers * 3 + 2)
  assert split["params"] == (whole["params"] - norms) // 8 + norms
  assert split["self_cache"] == whole["self_cache"] // 32
  replicated = partitioning.memory_per_device(xxl, (4, 8), 32, 256, "bfloat16",
                                              replicate_params=True)
  assert replicated["params"] == whole["params"]
  with pytest.raises(ValueError, match="dtype must be one of"):
    partitioning.memory_per_device(xxl, (1, 1), 1, 1, "int8")
  with pytest.raises(ValueError, match="mesh_shape"):
    partitioning.memory_per_device(xxl, (1, 0), 1, 1)


# --- 8 simulated devices (subprocesses) ------------------------------------------------------

def test_sharded_decoding_is_exact_and_params_really_are_sharded():
  # One test (not a fixture shared by several): under pytest-xdist a module fixture would run
  # the ~1 CPU-minute worker once per xdist worker.
  report = _run_worker("decode")
  assert report["devices"] == 8
  assert sorted(report["meshes"]) == ["1x8", "2x4", "4x2", "8x1"]
  for mesh, r in report["meshes"].items():
    data, model = map(int, mesh.split("x"))
    # generate and speculative_generate, greedy and sampled (fixed key): the very tokens of the
    # single-device run.
    assert r["equal"] == {"generate_greedy": True, "generate_sampled": True,
                          "speculative_greedy": True, "speculative_sampled": True}, mesh
    # Output rows stay sharded with the batch (no gather inside the program).
    assert r["tokens_spec"] == (["data"] if data > 1 else []), mesh
    specs = r["specs"]
    assert specs["mlp_wi"] == [None, "model"] and specs["mlp_wo"] == ["model", None], mesh
    assert specs["query"] == [None, "model"] and specs["out"] == ["model", None], mesh
    assert specs["logits_dense"] == [None, "model"], mesh
    assert specs["layer_norm"] == [None], mesh
    assert specs["draft_wi"] == [], mesh  # The draft is replicated.
    assert specs["batch"] == ["data", None], mesh
    # TINY has 2 heads: sharded on a 2-way 'model' axis, replicated on 4 and 8 (not divisible).
    assert specs["rel_embedding"] == ([None, None] if model > 2 else ["model", None]), mesh
    # Each of the 8 devices holds 1/model of the columns of an mlp kernel.
    rows, cols = r["mlp_wi_shape"]
    assert r["mlp_wi_shard_shapes"] == [[rows, cols // model]], mesh
    assert r["mlp_wi_shard_devices"] == 8, mesh

  # The public entry point with sharded inputs: exact, sharded outputs, per-row acceptance and
  # call counts sharded with the batch, and the loop inside one program (no host callback).
  public = report["public"]
  assert public["equal"]
  assert public["tokens_spec"] == ["data"]
  assert public["accepted_spec"] == ["data"] and public["target_calls_spec"] == ["data"]
  assert public["hlo_has_while"] and not public["hlo_has_callback"]


def test_sharded_train_step_and_sharded_checkpoints(tmp_path):
  report = _run_worker("train", str(tmp_path))
  assert report["step"] == 1
  # Float32 sums in another order: the loss agrees to rounding, the SGD update to lr x rounding.
  assert report["loss"] == pytest.approx(report["ref_loss"], rel=1e-5)
  assert report["grad_norm"] == pytest.approx(report["ref_grad_norm"], rel=1e-5)
  assert report["params_update_scale"] > 1e-3  # The step really moved the params...
  assert report["params_max_diff"] < 1e-6 * report["params_scale"] + 1e-7  # ...the same way.
  assert report["opt_state_max_diff"] < 1e-6
  assert report["same_shardings"]  # Updated params and momentum keep the rules' shardings.
  assert report["wi_spec"] == [None, "model"] and report["trace_wi_spec"] == [None, "model"]
  # Saved on a (2, 4) mesh, restored into (4, 2) shardings, bit for bit.
  assert report["restored_max_diff"] == 0.0 and report["restored_params_max_diff"] == 0.0
  assert report["restored_wi_mesh"] == {"data": 4, "model": 2}
  assert report["restored_wi_spec"] == [None, "model"]
  assert report["restored_wi_shard_shape"] == [TINY.emb_dim, TINY.mlp_dim // 2]
  assert report["restored_params_spec"] == [None, "model"]


# --- two processes ------------------------------------------------------------------------------

def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_decode_a_batch_together(tmp_path):
  output = tmp_path / "out.json"
  common = [
      sys.executable, os.path.join(ROOT, "scripts", "multihost_decode.py"),
      "--coordinator_address", f"localhost:{_free_port()}", "--num_processes", "2",
      "--mesh", "4x2", "--target_config", json.dumps(config_to_dict(TINY)),
      "--draft_config", json.dumps(config_to_dict(TINY_DRAFT)), "--batch", "8",
      "--input_length", "6", "--max_decode_len", "10", "--gamma", "3", "--temperature", "1.0",
      "--seed", "3", "--check", "--output", str(output)]
  procs = [subprocess.Popen(common + ["--process_id", str(i)], env=_env(4), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
  try:
    logs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_, err) in zip(procs, logs):
    assert p.returncode == 0, err[-4000:]
  report = json.loads(output.read_text())
  assert report["process_count"] == 2 and report["device_count"] == 8
  assert report["local_device_count"] == 4 and report["rows_per_process"] == 4
  assert report["mesh"] == {"data": 4, "model": 2}
  assert report["tokens_spec"] == ["data"]
  tokens = np.array(report["tokens"])
  assert tokens.shape == (8, 10) and tokens.any()
  assert report["matches_single_device"]
  np.testing.assert_array_equal(tokens, np.array(report["reference_tokens"]))
