"""Sharding over a `('data', 'model')` device mesh, T5X style, with JAX's own SPMD.

Nothing here changes how the model computes: parameters, batches and checkpoints are *placed* on a
`jax.sharding.Mesh` by logical-axis rules, and the jitted `generate` / `speculative_generate` /
train step run as one SPMD program, XLA's sharding propagation carrying the batch sharding into
the decode caches, the per-row positions and the acceptance counters. The same code runs on 1
device, 8 simulated CPU devices, or a multi-host pod slice (`initialize_distributed`).

Rules map the logical names of `specdec.network` (every parameter has them) onto mesh axes:

  batch → 'data';  mlp, heads, joined_kv, vocab → 'model';  embed, kv, length, relpos_buckets → none

This is T5X's standard 2-D (data + model parallel) layout (`t5x.partitioning.standard_logical_axis_
rules` with `activation_partitioning_dims=1, parameter_partitioning_dims=1`). One deviation: a
dimension that its mesh axis does not divide (e.g. 2 heads on a 4-way 'model' axis) is replicated
rather than rejected, so tiny models and odd meshes still run.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from specdec import model as model_lib
from specdec.config import T5Config

Array = jax.Array
Rules = Sequence[tuple[str, Any]]

MESH_AXES = ("data", "model")

DEFAULT_RULES: Rules = (
    ("batch", "data"),
    ("embed", None),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("kv", None),
    ("vocab", "model"),
    ("relpos_buckets", None),
    ("length", None),
)


# --- the mesh -------------------------------------------------------------------------------------

def make_mesh(data: int | None = None, model: int = 1, *,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 2-D mesh with axes `('data', 'model')` over `devices` (default: all global devices).

  Args:
    data: Size of the data-parallel axis; None takes `len(devices) // model`.
    model: Size of the model-parallel axis (consecutive devices, i.e. the fastest interconnect
      on TPU/GPU hosts, form one model-parallel group).
    devices: The devices to use; their number must equal `data * model`.
  """
  devices = list(jax.devices() if devices is None else devices)
  for name, value in (("model", model), ("data", data)):
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
      raise TypeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
      raise ValueError(f"{name} must be >= 1, got {value}")
  if not devices:
    raise ValueError("devices must not be empty")
  if data is None:
    if len(devices) % model:
      raise ValueError(f"model={model} does not divide the {len(devices)} devices")
    data = len(devices) // model
  if data * model != len(devices):
    raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices, "
                     f"got {len(devices)}")
  if devices == list(jax.devices()):
    try:  # Topology-aware order on TPU/GPU; falls back to the plain order elsewhere.
      from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
      grid = mesh_utils.create_device_mesh((int(data), int(model)), devices)
    except Exception:  # pylint: disable=broad-except
      grid = np.asarray(devices, dtype=object).reshape(int(data), int(model))
  else:
    grid = np.asarray(devices, dtype=object).reshape(int(data), int(model))
  return Mesh(grid, MESH_AXES)


def _check_rules(rules: Rules) -> dict[str, Any]:
  table = {}
  for item in rules:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
      raise TypeError(f"rules must be (logical name, mesh axis or None) pairs, got {item!r}")
    name, axis = item
    if axis is not None and axis not in MESH_AXES:
      raise ValueError(f"rules: {name!r} maps to unknown mesh axis {axis!r}; axes: {MESH_AXES}")
    table.setdefault(name, axis)  # The first rule for a name wins, as in flax/T5X.
  return table


def logical_to_mesh_spec(logical: P | Sequence[str | None], *, rules: Rules = DEFAULT_RULES,
                         shape: Sequence[int] | None = None,
                         mesh: Mesh | None = None) -> P:
  """A `PartitionSpec` of logical names → one of mesh axes.

  Unknown logical names raise ValueError. With `shape` and `mesh`, a mesh axis that does not
  divide its dimension is dropped (that dimension is replicated), and a mesh axis is used at most
  once per array.
  """
  table = _check_rules(rules)
  used, out = set(), []
  for i, name in enumerate(tuple(logical)):
    if name is None:
      out.append(None)
      continue
    if name not in table:
      raise ValueError(f"no partitioning rule for logical axis {name!r}; rules cover "
                       f"{sorted(table)}")
    axis = table[name]
    if axis is not None and mesh is not None and shape is not None:
      if shape[i] % mesh.shape[axis]:
        axis = None
    if axis in used:
      axis = None
    if axis is not None:
      used.add(axis)
    out.append(axis)
  return P(*out)


def _is_spec(x: Any) -> bool:
  return isinstance(x, P)


def param_specs(config: T5Config, mesh: Mesh | None = None, *,
                rules: Rules = DEFAULT_RULES) -> Any:
  """The parameter tree of `config` with a mesh-axis `PartitionSpec` at each leaf."""
  logical = model_lib.logical_axes(config)
  shapes = model_lib.abstract_params(config)
  return jax.tree_util.tree_map(
      lambda spec, s: logical_to_mesh_spec(spec, rules=rules, shape=s.shape, mesh=mesh),
      logical, shapes, is_leaf=_is_spec)


def param_shardings(config: T5Config, mesh: Mesh, *, rules: Rules = DEFAULT_RULES) -> Any:
  """The parameter tree of `config` with a `NamedSharding` on `mesh` at each leaf."""
  return jax.tree_util.tree_map(lambda spec: NamedSharding(mesh, spec),
                                param_specs(config, mesh, rules=rules), is_leaf=_is_spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Leading (batch) axis over 'data', the rest replicated."""
  return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))


# --- placing arrays ------------------------------------------------------------------------------

def place(x: Any, sharding: NamedSharding) -> Array:
  """Puts a host value, replicated on every process, onto `sharding` (single- or multi-host).

  On one host this is `jax.device_put`; when the sharding spans other processes' devices, each
  process builds its own shards from its (identical) copy of the value.
  """
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def _check_model(model: Any) -> None:
  if not isinstance(model, model_lib.T5Model):
    raise TypeError(f"model must be a T5Model, got {type(model).__name__}")


def _check_mesh(mesh: Any) -> None:
  if not isinstance(mesh, Mesh):
    raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
  if tuple(mesh.axis_names) != MESH_AXES:
    raise ValueError(f"mesh axes must be {MESH_AXES}, got {tuple(mesh.axis_names)}")


def shard_params(model: model_lib.T5Model, mesh: Mesh, *,
                 rules: Rules = DEFAULT_RULES) -> model_lib.T5Model:
  """`model` with every parameter placed on `mesh` by the logical-axis `rules`."""
  _check_model(model)
  _check_mesh(mesh)
  shardings = param_shardings(model.config, mesh, rules=rules)
  params = jax.tree_util.tree_map(place, model.params, shardings)
  return model.replace(params=params)


def _path_names(path) -> tuple[str, ...]:
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
  return tuple(names)


def state_shardings(state: Any, config: T5Config, mesh: Mesh, *,
                    rules: Rules = DEFAULT_RULES) -> Any:
  """Shardings for a pytree that holds `config`'s parameters, e.g. a `training.TrainState`.

  A leaf whose path ends with a parameter's path and has that parameter's shape (the params
  themselves, AdamW's mu and nu, ...) gets the parameter's sharding; every other leaf (step
  counters, Adafactor's factored row/column statistics) is replicated. Works on arrays and on
  `jax.ShapeDtypeStruct`s (`jax.eval_shape` output).
  """
  _check_mesh(mesh)
  by_path = {}
  specs = param_specs(config, mesh, rules=rules)
  shapes = model_lib.abstract_params(config)
  for (path, spec), s in zip(jax.tree_util.tree_flatten_with_path(specs, is_leaf=_is_spec)[0],
                             jax.tree_util.tree_leaves(shapes)):
    by_path[_path_names(path)] = (spec, tuple(s.shape))
  depth = max(len(k) for k in by_path)

  def sharding(path, leaf):
    names = _path_names(path)
    for n in range(min(depth, len(names)), 0, -1):
      hit = by_path.get(names[-n:])
      if hit is not None and hit[1] == tuple(np.shape(leaf)):
        return NamedSharding(mesh, hit[0])
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(sharding, state)


def shard_state(state: Any, config: T5Config, mesh: Mesh, *,
                rules: Rules = DEFAULT_RULES) -> Any:
  """`state` (e.g. a `TrainState`) with every leaf placed by `state_shardings`."""
  return jax.tree_util.tree_map(place, state, state_shardings(state, config, mesh, rules=rules))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Every array leaf of `tree` (a `T5Model`, a draft, any pytree) replicated on all of `mesh`.

  A small draft is usually replicated: sharding it over 'model' buys little memory and adds a
  collective per drafted token.
  """
  _check_mesh(mesh)
  sharding = replicated(mesh)
  return jax.tree_util.tree_map(lambda x: place(x, sharding), tree)


def shard_batch(tokens: Any, mesh: Mesh, *, vocab_size: int | None = None) -> Array:
  """Rows over 'data': `tokens` int `[b, ...]` are *this process's* rows.

  On one host `b` is the global batch; on n hosts each passes its own `b` rows and the global
  array has `n * b` rows in process order (`jax.make_array_from_process_local_data`). The global
  batch must be divisible by the 'data' axis size. With `vocab_size`, ids outside
  [0, vocab_size) raise ValueError (the decoders cannot check rows held by other processes).
  """
  _check_mesh(mesh)
  tokens = np.asarray(tokens)
  if tokens.ndim < 1 or tokens.shape[0] == 0:
    raise ValueError(f"tokens must have a non-empty batch axis, got shape {tokens.shape}")
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"tokens must have an integer dtype, got {tokens.dtype}")
  if vocab_size is not None and tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
    raise ValueError(f"tokens hold ids outside [0, {vocab_size}): min {tokens.min()}, "
                     f"max {tokens.max()}")
  tokens = tokens.astype(np.int32)
  global_rows = tokens.shape[0] * jax.process_count()
  if global_rows % mesh.shape["data"]:
    raise ValueError(f"tokens: the global batch ({global_rows} rows) is not divisible by the "
                     f"mesh's 'data' axis ({mesh.shape['data']})")
  sharding = batch_sharding(mesh, tokens.ndim)
  if jax.process_count() == 1:
    return jax.device_put(tokens, sharding)
  return jax.make_array_from_process_local_data(sharding, tokens)


def gather(tree: Any) -> Any:
  """Every array of `tree` as one numpy array holding the global value, on every process."""
  if jax.process_count() == 1:
    return jax.tree_util.tree_map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def sharded_initializer(config: T5Config, mesh: Mesh, *, rules: Rules = DEFAULT_RULES,
                        param_dtype: str | None = None):
  """The jitted `key → params` behind `init_sharded` (lower/compile it to time the two apart).

  `param_dtype` (e.g. 'bfloat16') stores the parameters in that dtype, cast inside the same
  program, so the float32 values never exist whole (inference only: `T5Model` keeps float32
  otherwise; its layers cast parameters to the config's dtype either way).
  """
  _check_mesh(mesh)
  cast = (lambda x: x) if param_dtype is None else (lambda x: x.astype(param_dtype))
  return jax.jit(
      lambda key: jax.tree_util.tree_map(cast, nn.unbox(model_lib._init_params(config, key))),  # pylint: disable=protected-access
      out_shardings=param_shardings(config, mesh, rules=rules))


def init_sharded(config: T5Config, mesh: Mesh, rng: Array | int = 0, *,
                 rules: Rules = DEFAULT_RULES, param_dtype: str | None = None
                 ) -> model_lib.T5Model:
  """`T5Model.init` computed directly into its shards (no device ever holds the whole model).

  Gives the same values as `T5Model.init(config, rng)` (rounded to `param_dtype` if given; see
  `sharded_initializer`).
  """
  if isinstance(rng, int):
    rng = jax.random.PRNGKey(rng)
  init = sharded_initializer(config, mesh, rules=rules, param_dtype=param_dtype)
  return model_lib.T5Model(config=config, params=init(rng))


# --- checkpoints -----------------------------------------------------------------------------

def abstract_sharded(tree: Any, shardings: Any) -> Any:
  """`jax.ShapeDtypeStruct`s of `tree` carrying `shardings`: the restore target for orbax."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), tree, shardings)


def save_sharded(path: str, tree: Any) -> None:
  """Writes a pytree of (possibly sharded, possibly multi-host) arrays with orbax.

  Every process calls it; each writes its own shards (OCDBT + tensorstore).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), tree, force=True)
  checkpointer.wait_until_finished()


def restore_sharded(path: str, target: Any) -> Any:
  """Reads what `save_sharded` wrote straight into the shardings of `target`.

  `target` is a pytree of `jax.ShapeDtypeStruct`s with `.sharding` (see `abstract_sharded`), or
  of arrays whose shardings are reused. Each device reads only its own shards, so the mesh may
  differ from the one that saved.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise ValueError(f"checkpoint not found: {path}")
  target = jax.tree_util.tree_map(
      lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
      else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
  return ocp.StandardCheckpointer().restore(path, target)


# --- multi-host --------------------------------------------------------------------------------

def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None, *,
                           local_device_ids: Sequence[int] | None = None,
                           cpu_collectives: str | None = "gloo") -> bool:
  """Calls `jax.distributed.initialize` when this is (or may be) a multi-process run.

  Arguments left as None come from the environment: `JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (and JAX's own auto-detection on Cloud TPU, SLURM and
  Open MPI when `coordinator_address` is unset). With none of these, or `num_processes == 1`, it
  does nothing. Must run before anything touches a JAX device. On CPU, cross-process collectives
  need an implementation (`cpu_collectives`, 'gloo' by default); it is ignored on TPU/GPU.

  Returns:
    True if `jax.distributed.initialize` was called.
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS") or None
  if num_processes is None and env.get("JAX_NUM_PROCESSES"):
    num_processes = int(env["JAX_NUM_PROCESSES"])
  if process_id is None and env.get("JAX_PROCESS_ID"):
    process_id = int(env["JAX_PROCESS_ID"])
  for name, value in (("num_processes", num_processes), ("process_id", process_id)):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
      raise TypeError(f"{name} must be an int, got {value!r}")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
    raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
  if num_processes == 1:
    return False
  auto = any(k in env for k in ("TPU_WORKER_HOSTNAMES", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE"))
  if coordinator_address is None and not auto:
    return False
  if coordinator_address is not None and (num_processes is None or process_id is None):
    raise ValueError("coordinator_address needs num_processes and process_id (flags or "
                     "JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)
  return True


def add_distributed_flags(parser: Any) -> None:
  """Adds --coordinator_address/--num_processes/--process_id and --mesh to an argparse parser."""
  parser.add_argument("--coordinator_address", default=None,
                      help="host:port of process 0 (env JAX_COORDINATOR_ADDRESS)")
  parser.add_argument("--num_processes", type=int, default=None, help="(env JAX_NUM_PROCESSES)")
  parser.add_argument("--process_id", type=int, default=None, help="(env JAX_PROCESS_ID)")
  parser.add_argument("--mesh", default=None,
                      help="DATAxMODEL, e.g. 4x2; default: all devices on 'data'")


def parse_mesh(text: str | None) -> tuple[int | None, int]:
  """'4x2' → (4, 2); None → (None, 1) (all devices data parallel); '-1x2' → (None, 2)."""
  if text is None:
    return None, 1
  parts = text.lower().split("x")
  try:
    data, model = (int(p) for p in parts)
  except ValueError as e:
    raise ValueError(f"--mesh must look like DATAxMODEL (e.g. 4x2), got {text!r}") from e
  return (None if data == -1 else data), model


# --- memory accounting -------------------------------------------------------------------------

_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _per_device(shape: Sequence[int], spec: P, mesh_shape: Mapping[str, int]) -> int:
  n = 1
  for i, dim in enumerate(shape):
    axis = spec[i] if i < len(spec) else None
    n *= -(-dim // mesh_shape[axis]) if axis is not None else dim
  return n


class _FakeMesh:
  def __init__(self, shape):
    self.shape = shape


def memory_per_device(config: T5Config, mesh_shape: tuple[int, int], batch: int,
                      cache_length: int, dtype: str = "float32", *,
                      encoder_length: int | None = None, cache_dtype: str | None = None,
                      rules: Rules = DEFAULT_RULES, replicate_params: bool = False
                      ) -> dict[str, int]:
  """Bytes per device of `config`'s parameters and decode cache on a `(data, model)` mesh.

  Parameters are sharded by `rules` (or replicated with `replicate_params`, as a draft usually
  is) and stored in `dtype`. The cache is a `DecoderCache`: self-attention keys `[N, B, H, D, L]`
  and values `[N, B, H, L, D]`, cross-attention ones the same with S for L (in `cache_dtype`, default
  the config's activation dtype), the encoder mask `[B, S]` and positions `[B]`; batch over
  'data', heads over 'model' (what XLA's propagation picks from the `joined_kv` kernels; not
  with `replicate_params`).
  Activations and XLA scratch are not counted.

  Returns:
    dict with 'params', 'self_cache', 'cross_cache', 'total' (ints, bytes per device).
  """
  if not isinstance(config, T5Config):
    raise TypeError(f"config must be a T5Config, got {type(config).__name__}")
  if len(mesh_shape) != 2 or any(int(m) < 1 for m in mesh_shape):
    raise ValueError(f"mesh_shape must be (data, model) with sizes >= 1, got {mesh_shape}")
  for name, value in (("batch", batch), ("cache_length", cache_length)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  cache_dtype = cache_dtype or config.dtype
  for name, value in (("dtype", dtype), ("cache_dtype", cache_dtype)):
    if value not in _BYTES:
      raise ValueError(f"{name} must be one of {sorted(_BYTES)}, got {value!r}")
  encoder_length = encoder_length or cache_length
  sizes = {"data": int(mesh_shape[0]), "model": int(mesh_shape[1])}
  mesh = _FakeMesh(sizes)
  logical = model_lib.logical_axes(config)
  shapes = model_lib.abstract_params(config)
  params = 0
  for spec, s in zip(jax.tree_util.tree_leaves(logical, is_leaf=_is_spec),
                     jax.tree_util.tree_leaves(shapes)):
    mesh_spec = P() if replicate_params else logical_to_mesh_spec(
        spec, rules=rules, shape=s.shape, mesh=mesh)
    params += _per_device(s.shape, mesh_spec, sizes)
  c = config
  # A replicated model's kernels are whole on every device, so its cache is split by batch only.
  heads_axis = ("model" if c.num_heads % sizes["model"] == 0 and not replicate_params
                else None)
  # Values [N, B, H, L, D]; the keys [N, B, H, D, L] are split alike and as large.
  kv_spec = P(None, "data" if batch % sizes["data"] == 0 else None, heads_axis, None, None)
  self_cache = 2 * _per_device((c.num_decoder_layers, batch, c.num_heads, cache_length,
                                c.head_dim), kv_spec, sizes)
  cross_cache = 2 * _per_device((c.num_decoder_layers, batch, c.num_heads, encoder_length,
                                 c.head_dim), kv_spec, sizes)
  local_batch = -(-batch // sizes["data"])
  out = {
      "params": params * _BYTES[dtype],
      "self_cache": self_cache * _BYTES[cache_dtype],
      "cross_cache": cross_cache * _BYTES[cache_dtype] + local_batch * (encoder_length + 4),
  }
  out["total"] = sum(out.values())
  return out
