"""Reads the model parameters of T5X checkpoints.

`load_params(checkpoint_dir, config)` reads the model parameters (`target.*`) of a checkpoint
written by T5X's `checkpoints.Checkpointer` (the legacy format: a msgpack file `checkpoint` whose
array leaves are TensorStore specs of one zarr folder per array, e.g.
`target.decoder.layers_0.mlp.wi_0.kernel/`; small arrays may be stored inline). The optimizer
state (`state.*`) is never read. Arrays may be float32 or bfloat16 and may be chunked; they are
read with tensorstore and returned as float32 numpy arrays in T5X's parameter tree
(`token_embedder/embedding`, `encoder/layers_0/attention/query/kernel`, ...).

The config a checkpoint was made with comes from its T5X model gin file through
`specdec.t5x_gin.config_from_gin`.

Local paths and `gs://bucket/path` paths (when tensorstore finds Google Cloud credentials) both
work. Every problem with the files raises a ValueError that names the file, folder or array.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Iterable

import numpy as np

from specdec import param_tree
from specdec.config import T5Config

_GCS_RE = re.compile(r"^gs://([^/]+)/?(.*)$", re.DOTALL)
_CHECKPOINT_FILE = "checkpoint"
_CHECKPOINT_DIR_RE = re.compile(r"^checkpoint_(\d+)$")
_PLACEHOLDER = "PLACEHOLDER://"

# --------------------------------------------------------------------------------------------
# Paths: local folders and gs:// (one kvstore spec for each).
# --------------------------------------------------------------------------------------------


def _is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def _join(base: str, *parts: str) -> str:
  if _is_gcs(base):
    return "/".join([base.rstrip("/")] + [p.strip("/") for p in parts])
  return os.path.join(base, *parts)


def kvstore_spec(path: str) -> dict[str, Any]:
  """The tensorstore kvstore spec of a folder: the `file` driver for a local path, the `gcs`
  driver for `gs://bucket/path`. The returned path ends with '/'."""
  m = _GCS_RE.match(path)
  if m is not None:
    prefix = m.group(2).strip("/")
    return {"driver": "gcs", "bucket": m.group(1), "path": prefix + "/" if prefix else ""}
  return {"driver": "file", "path": os.path.abspath(path).rstrip(os.sep) + os.sep}


def _read_file(path: str) -> bytes:
  """The bytes of a (local or gs://) file; ValueError naming it if it cannot be read."""
  if not _is_gcs(path):
    try:
      with open(path, "rb") as f:
        return f.read()
    except OSError as e:
      raise ValueError(f"Cannot read T5X checkpoint file {path}: {e}") from e
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  folder, name = path.rsplit("/", 1)
  try:
    store = ts.KvStore.open(kvstore_spec(folder)).result()
    result = store.read(name).result()
  except Exception as e:  # tensorstore raises ValueError/OSError/...; name the file either way.
    raise ValueError(f"Cannot read T5X checkpoint file {path}: {e}") from e
  if result.state != "value":
    raise ValueError(f"T5X checkpoint file not found: {path}")
  return bytes(result.value)


def _gcs_listdir(path: str) -> list[str] | None:
  """Immediate sub-folder names of a gs:// folder, or None if it cannot be listed."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  try:
    store = ts.KvStore.open(kvstore_spec(path)).result()
    keys = store.list().result()
  except Exception:  # pylint: disable=broad-except
    return None
  names = {k.decode() if isinstance(k, bytes) else k for k in keys}
  return sorted({n.split("/", 1)[0] for n in names if "/" in n} | {n for n in names if "/" not in n})


def resolve_checkpoint_dir(path: str) -> str:
  """The checkpoint folder to read: `path` itself if it holds a `checkpoint` file, else the only
  `checkpoint_<step>` folder inside it. ValueError naming `path` otherwise."""
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"checkpoint_dir must be a path, got {type(path).__name__}")
  path = os.fspath(path)
  if _is_gcs(path):
    path = path.rstrip("/")
    names = _gcs_listdir(path)
    if names is None or _CHECKPOINT_FILE in names:
      return path  # Reading the file will name it if it is missing.
    subdirs = [n for n in names if _CHECKPOINT_DIR_RE.match(n)]
  else:
    if not os.path.isdir(path):
      raise ValueError(f"T5X checkpoint directory does not exist: {path}")
    if os.path.isfile(os.path.join(path, _CHECKPOINT_FILE)):
      return path
    subdirs = [n for n in os.listdir(path) if _CHECKPOINT_DIR_RE.match(n)
               and os.path.isfile(os.path.join(path, n, _CHECKPOINT_FILE))]
  if len(subdirs) == 1:
    return _join(path, subdirs[0])
  if not subdirs:
    raise ValueError(f"Not a T5X checkpoint directory: {path} has no '{_CHECKPOINT_FILE}' file "
                     "and no checkpoint_<step> folder")
  subdirs.sort(key=lambda n: int(_CHECKPOINT_DIR_RE.match(n).group(1)))
  raise ValueError(f"{path} holds several T5X checkpoints ({', '.join(subdirs)}); pass one of "
                   "them as checkpoint_dir")


# --------------------------------------------------------------------------------------------
# The msgpack file.
# --------------------------------------------------------------------------------------------


def read_checkpoint_file(checkpoint_dir: str) -> dict[str, Any]:
  """Decodes the msgpack `checkpoint` file of a T5X checkpoint folder (arrays stored inline are
  restored; arrays stored in their own folders stay TensorStore spec dicts / placeholders)."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  path = _join(checkpoint_dir, _CHECKPOINT_FILE)
  if not _is_gcs(path) and not os.path.isfile(path):
    raise ValueError(f"T5X checkpoint file not found: {path}")
  data = _read_file(path)
  try:
    contents = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises ValueError, ExtraData, TypeError, ...
    raise ValueError(f"Corrupt T5X checkpoint file {path} (could not decode msgpack: "
                     f"{type(e).__name__}: {e})") from e
  if not isinstance(contents, dict):
    raise ValueError(f"Corrupt T5X checkpoint file {path}: expected a dict at the top level, "
                     f"got {type(contents).__name__}")
  return contents


def _target_tree(contents: dict[str, Any], path: str) -> dict[str, Any]:
  # T5X's legacy layout: {'version': 3, 'optimizer': {'target': ..., 'state': ...}}.
  tree = contents.get("optimizer", contents)
  if not isinstance(tree, dict) or not isinstance(tree.get("target"), dict):
    keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
    raise ValueError(f"T5X checkpoint file {path} has no model parameters "
                     f"('optimizer' -> 'target'); found {keys}")
  return tree["target"]


def _is_ts_spec(value: Any) -> bool:
  return isinstance(value, dict) and "driver" in value and (
      "kvstore" in value or "path" in value)


def _flatten_target(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  if isinstance(tree, dict) and not _is_ts_spec(tree):
    out = {}
    for key, value in tree.items():
      out.update(_flatten_target(value, prefix + (str(key),)))
    return out
  return {prefix: tree}


@dataclasses.dataclass
class _Leaf:
  name: str  # 'target.encoder.layers_0.attention.query.kernel'
  keys: tuple[str, ...]  # ('encoder', 'layers_0', 'attention', 'query', 'kernel')
  value: np.ndarray | None = None  # Inline array.
  spec: dict[str, Any] | None = None  # TensorStore spec for an array in its own folder.
  folder: str | None = None
  declared_shape: tuple[int, ...] | None = None


def _leaf(keys: tuple[str, ...], value: Any, checkpoint_dir: str, path: str) -> _Leaf:
  name = "target." + ".".join(keys)
  if isinstance(value, str) and value.startswith(_PLACEHOLDER):
    relative = value[len(_PLACEHOLDER):]
    folder = _join(checkpoint_dir, relative)
    return _Leaf(name, keys, spec={"driver": "zarr", "kvstore": kvstore_spec(folder)},
                 folder=folder)
  if _is_ts_spec(value):
    # As T5X's `_update_ts_path_from_relative_to_absolute`: the stored path is relative to the
    # checkpoint folder (T5X writes it that way); the kvstore follows checkpoint_dir's kind.
    kvstore = value.get("kvstore", {})
    relative = kvstore.get("path", value.get("path"))
    if not isinstance(relative, str):
      raise ValueError(f"Corrupt T5X checkpoint file {path}: array {name} has no path in its "
                       f"TensorStore spec {value}")
    folder = relative if (_is_gcs(relative) or os.path.isabs(relative)) else _join(
        checkpoint_dir, relative)
    spec = {"driver": value["driver"], "kvstore": kvstore_spec(folder)}
    shape = value.get("metadata", {}).get("shape")
    declared = tuple(int(n) for n in shape) if isinstance(shape, (list, tuple)) else None
    return _Leaf(name, keys, spec=spec, folder=folder, declared_shape=declared)
  try:
    array = np.asarray(value)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"Corrupt T5X checkpoint file {path}: array {name} is neither an array "
                     f"nor a TensorStore spec ({type(value).__name__})") from e
  if array.dtype.kind not in "fiub" and array.dtype.name != "bfloat16":
    raise ValueError(f"Corrupt T5X checkpoint file {path}: array {name} is neither an array "
                     f"nor a TensorStore spec ({type(value).__name__})")
  return _Leaf(name, keys, value=array, declared_shape=array.shape)


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for keys, value in flat.items():
    node = tree
    for key in keys[:-1]:
      node = node.setdefault(key, {})
    node[keys[-1]] = value
  return tree


def list_arrays(checkpoint_dir: str) -> dict[str, tuple[int, ...] | None]:
  """'target.x.y' → shape recorded in the checkpoint file (None if it records none)."""
  checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
  path = _join(checkpoint_dir, _CHECKPOINT_FILE)
  target = _target_tree(read_checkpoint_file(checkpoint_dir), path)
  return {leaf.name: leaf.declared_shape for leaf in
          (_leaf(k, v, checkpoint_dir, path) for k, v in _flatten_target(target).items())}


# --------------------------------------------------------------------------------------------
# The arrays.
# --------------------------------------------------------------------------------------------


def _read_array(leaf: _Leaf, store) -> np.ndarray:
  if leaf.declared_shape is not None and tuple(store.shape) != leaf.declared_shape:
    raise ValueError(f"T5X checkpoint array {leaf.name} in {leaf.folder} has shape "
                     f"{tuple(store.shape)}, but the checkpoint file records "
                     f"{leaf.declared_shape}")
  try:
    array = store.read().result()
  except Exception as e:  # A missing or corrupt chunk.
    raise ValueError(f"Cannot read T5X checkpoint array {leaf.name} in {leaf.folder}: "
                     f"{e}") from e
  return np.asarray(array).astype(np.float32)


def load_params(checkpoint_dir: str, config: T5Config | None, *,
                progress: Callable[[Iterable], Iterable] | None = None) -> dict[str, Any]:
  """Reads the model parameters of a T5X checkpoint.

  Args:
    checkpoint_dir: A T5X checkpoint folder `.../checkpoint_<step>` (local or `gs://`), or a
      folder holding exactly one such checkpoint folder.
    config: The model's config. The shapes the checkpoint file records are checked against it
      before any array is read (one ValueError naming every missing, unexpected or mis-shaped
      parameter); None skips that check.
    progress: Optional wrapper of the iterable over arrays being read, e.g. `tqdm.tqdm`.

  Returns:
    T5X's parameter tree (nested dicts, e.g. `['encoder']['layers_0']['attention']['query']
    ['kernel']`) of float32 numpy arrays, whatever dtype (float32, bfloat16) they were stored in.

  Raises:
    ValueError: naming the folder, file or array, if the folder does not exist, the msgpack file
      is missing or corrupt, an array folder is missing or unreadable, an array's stored shape
      differs from the one the checkpoint file records, or the parameters do not fit `config`.
  """
  if config is not None and not isinstance(config, T5Config):
    raise TypeError(f"config must be a T5Config, got {type(config).__name__}")
  checkpoint_dir = resolve_checkpoint_dir(checkpoint_dir)
  path = _join(checkpoint_dir, _CHECKPOINT_FILE)
  target = _target_tree(read_checkpoint_file(checkpoint_dir), path)
  leaves = [_leaf(k, v, checkpoint_dir, path) for k, v in _flatten_target(target).items()]

  if config is not None and all(leaf.declared_shape is not None for leaf in leaves):
    # Zero-stride stand-ins: the check needs shapes only, not the data.
    declared = _unflatten({leaf.keys: np.broadcast_to(np.float32(0), leaf.declared_shape)
                           for leaf in leaves})
    param_tree.check_params(config, declared, source=checkpoint_dir)

  # Open every array first (tensorstore does the I/O of all opens concurrently), then read.
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  missing = [leaf for leaf in leaves if leaf.spec is not None and not _is_gcs(leaf.folder)
             and not os.path.isdir(leaf.folder)]
  if missing:
    raise ValueError("T5X checkpoint arrays are missing: " + ", ".join(
        f"{leaf.name} (folder {leaf.folder} does not exist)" for leaf in missing))
  futures = {leaf.name: ts.open(leaf.spec, open=True, read=True)
             for leaf in leaves if leaf.spec is not None}
  flat = {}
  for leaf in (progress(leaves) if progress is not None else leaves):
    if leaf.spec is None:
      flat[leaf.keys] = np.asarray(leaf.value).astype(np.float32)
      continue
    try:
      store = futures[leaf.name].result()
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"Cannot open T5X checkpoint array {leaf.name} in {leaf.folder}: "
                       f"{e}") from e
    flat[leaf.keys] = _read_array(leaf, store)
  return _unflatten(flat)
