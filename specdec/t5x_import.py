"""Reads T5X checkpoints and T5X model gin files.

* `load_params(checkpoint_dir, config)` reads the model parameters (`target.*`) of a checkpoint
  written by T5X's `checkpoints.Checkpointer` (the legacy format: a msgpack file `checkpoint`
  whose array leaves are TensorStore specs of one zarr folder per array, e.g.
  `target.decoder.layers_0.mlp.wi_0.kernel/`; small arrays may be stored inline). The optimizer
  state (`state.*`) is never read. Arrays may be float32 or bfloat16 and may be chunked; they are
  read with tensorstore and returned as float32 numpy arrays in T5X's parameter tree
  (`token_embedder/embedding`, `encoder/layers_0/attention/query/kernel`, ...).
* `config_from_gin(path)` reads the `network.T5Config.*` bindings of a T5X model gin file (such
  as T5X's `t5x/examples/t5/t5_1_1/small.gin`) with a small parser for the subset of gin that
  those files use; neither gin's parser nor t5x is needed.

Local paths and `gs://bucket/path` paths (when tensorstore finds Google Cloud credentials) both
work. Every problem with the files raises a ValueError that names the file, folder or array.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
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
_LOG = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------
# Gin files.
# --------------------------------------------------------------------------------------------

# T5X's `t5x/examples/t5/network.py` T5Config defaults, used for fields a gin file leaves unbound
# (they differ from specdec's T5Config defaults: T5X's default MLP is ('relu',)).
_T5X_DEFAULTS = {
    "dtype": "float32", "emb_dim": 512, "num_heads": 8, "num_encoder_layers": 6,
    "num_decoder_layers": 6, "head_dim": 64, "mlp_dim": 2048, "mlp_activations": ("relu",),
    "dropout_rate": 0.1, "logits_via_embedding": False,
}
# T5X T5Config fields that specdec has no field for; accepted only with the value that specdec's
# network computes (T5X's default).
_T5X_ONLY_FIELDS = {"float32_attention_logits": False}
_FIELDS = {f.name for f in dataclasses.fields(T5Config)}
_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
                "f32": "float32", "bf16": "bfloat16", "f16": "float16", "fp32": "float32",
                "fp16": "float16"}
_MACRO_RE = re.compile(r"^%([A-Za-z_][\w.]*)$")
_NAME_RE = re.compile(r"^[A-Za-z_][\w]*$")
_BINDING_RE = re.compile(r"^([A-Za-z_][\w./]*)\s*=\s*(.*)$", re.DOTALL)
_BLOCK_RE = re.compile(r"^([A-Za-z_][\w./]*)\s*:\s*$")
_INCLUDE_RE = re.compile(r"^include\s+(.*)$")


@dataclasses.dataclass
class _Value:
  text: str
  where: str  # 'file:line'


def _strip_comment(line: str) -> str:
  """The line without a trailing `# comment` ('#' inside quotes is kept)."""
  quote = None
  for i, ch in enumerate(line):
    if quote:
      if ch == "\\":
        continue
      if ch == quote:
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch == "#":
      return line[:i]
  return line


def _logical_lines(path: str, text: str) -> list[tuple[int, str, bool]]:
  """(line number, text, indented) for each statement; bracketed values may span lines."""
  out: list[tuple[int, str, bool]] = []
  pending: list[str] = []
  depth, start, indented = 0, 0, False
  for number, raw in enumerate(text.splitlines(), 1):
    line = _strip_comment(raw).rstrip()
    if not pending:
      if not line.strip():
        continue
      start, indented = number, line[:1].isspace()
    continued = line.endswith("\\")
    if continued:
      line = line[:-1]
    pending.append(line.strip())
    depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
    if continued or depth > 0:
      continue
    out.append((start, " ".join(p for p in pending if p), indented))
    pending, depth = [], 0
  if pending:
    raise ValueError(f"Cannot parse gin file {path}: unclosed bracket in the statement at "
                     f"line {start}")
  return out


def _is_t5config(selector: str) -> bool:
  # 'network.T5Config', 't5x.examples.t5.network.T5Config' or 'T5Config'; scoped ones
  # ('encoder/network.T5Config') are not the model's config.
  return "/" not in selector and selector.split(".")[-1] == "T5Config"


def _find_include(include: str, gin_path: str) -> str | None:
  """An included file: absolute, or relative to the gin file's folder or any folder above it
  (T5X's includes are relative to the t5x repository root, e.g. 't5x/examples/t5/...')."""
  if os.path.isabs(include):
    return include if os.path.isfile(include) else None
  folder = os.path.dirname(os.path.abspath(gin_path))
  while True:
    candidate = os.path.join(folder, include)
    if os.path.isfile(candidate):
      return candidate
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def _parse_gin(path: str, macros: dict[str, _Value], fields: dict[str, _Value],
               seen: tuple[str, ...] = ()) -> None:
  """Adds the macros and T5Config bindings of `path` (and of the files it includes) in file
  order, later ones overriding earlier ones as in gin."""
  if not os.path.isfile(path):
    raise ValueError(f"Gin file not found: {path}")
  if os.path.abspath(path) in seen:
    raise ValueError(f"Gin file {path} includes itself (via {' -> '.join(seen)})")
  seen = seen + (os.path.abspath(path),)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  block = None  # The selector of the `selector:` block we are in.
  for number, line, indented in _logical_lines(path, text):
    where = f"{path}:{number}"
    if not indented:
      block = None
    m = _BLOCK_RE.match(line)
    if m and not indented:
      block = m.group(1)
      continue
    if indented:
      if block is None:
        raise ValueError(f"Cannot parse gin file {where}: unexpected indented line {line!r}")
      m = _BINDING_RE.match(line)
      if not m or "." in m.group(1) or "/" in m.group(1):
        raise ValueError(f"Cannot parse gin file {where}: expected 'name = value' in the "
                         f"{block} block, got {line!r}")
      if _is_t5config(block):
        fields[m.group(1)] = _Value(m.group(2).strip(), where)
      continue
    m = _INCLUDE_RE.match(line)
    if m:
      try:
        include = ast.literal_eval(m.group(1).strip())
      except (ValueError, SyntaxError) as e:
        raise ValueError(f"Cannot parse gin file {where}: bad include {line!r}") from e
      found = _find_include(include, path)
      if found is None:
        _LOG.warning("%s: ignoring include %r (no such file relative to the gin file or the "
                        "folders above it)", where, include)
      else:
        _parse_gin(found, macros, fields, seen)
      continue
    if line.startswith(("from ", "import ")):
      continue  # `from __gin__ import dynamic_registration`, `import t5x.examples...`.
    m = _BINDING_RE.match(line)
    if not m:
      raise ValueError(f"Cannot parse gin file {where}: {line!r}")
    selector, value = m.group(1), m.group(2).strip()
    if _NAME_RE.match(selector):
      macros[selector] = _Value(value, where)
    elif "." in selector:
      configurable, _, param = selector.rpartition(".")
      if _is_t5config(configurable):
        fields[param] = _Value(value, where)
    # Other bindings (optimizer, vocabulary, ...) do not concern the network config.


def _evaluate(value: _Value, macros: dict[str, _Value], field: str,
              stack: tuple[str, ...] = ()) -> Any:
  text = value.text
  m = _MACRO_RE.match(text)
  if m:
    name = m.group(1)
    if name in stack:
      raise ValueError(f"{value.where}: macro %{name} refers to itself")
    if name == "gin.REQUIRED" or name not in macros:
      raise ValueError(f"{value.where}: T5Config.{field} = %{name}, but macro {name} is not "
                       f"defined in the gin file; pass it as an override, e.g. "
                       f"config_from_gin(path, {field}=...) or {name}=...")
    return _evaluate(macros[name], macros, field, stack + (name,))
  if text.startswith("@"):
    raise ValueError(f"{value.where}: T5Config.{field} = {text}: configurable references are not "
                     "supported here; give a literal value")
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    pass
  # Gin writes a few constants bare: dtype names like jnp.bfloat16.
  if field == "dtype":
    return text
  raise ValueError(f"{value.where}: cannot parse the value of T5Config.{field}: {text!r}")


def _map_dtype(value: Any, where: str) -> str:
  name = str(value)
  for prefix in ("jax.numpy.", "jnp.", "numpy.", "np."):
    if name.startswith(prefix):
      name = name[len(prefix):]
  if name not in _DTYPE_NAMES:
    raise ValueError(f"{where}: unsupported T5Config.dtype {value!r}; supported: "
                     "'float32', 'bfloat16', 'float16'")
  return _DTYPE_NAMES[name]


def config_from_gin(path: str, **overrides: Any) -> T5Config:
  """Reads the `network.T5Config.*` bindings of a T5X model gin file.

  Understands the subset of gin that T5X's model gin files use: `network.T5Config:` blocks of
  indented `key = value` lines, `network.T5Config.key = value` lines, macros (`NAME = value`,
  referenced as `%NAME`), `#` comments, `from`/`import` lines (skipped) and `include` lines
  (followed when the file exists relative to the gin file or a folder above it, e.g. the t5x
  repository root for `include 't5x/examples/t5/t5_1_1/base.gin'`; otherwise skipped with a
  warning). Values are Python literals (numbers, strings, tuples, True/False).

  Fields the file leaves unbound take T5X's `network.T5Config` defaults (e.g. ('relu',)
  activations), not specdec's.

  Args:
    path: The gin file.
    **overrides: T5Config fields (`dropout_rate=0.0`) or macros (`DROPOUT_RATE=0.0`) to set,
      taking precedence over the file.

  Returns:
    The T5Config.

  Raises:
    ValueError: naming the file if it does not exist or cannot be parsed, and naming the keys
      if it binds T5Config fields specdec does not know, or a value refers to an undefined macro.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"path must be a path to a gin file, got {type(path).__name__}")
  path = os.fspath(path)
  macros: dict[str, _Value] = {}
  fields: dict[str, _Value] = {}
  _parse_gin(path, macros, fields)

  field_overrides = {}
  unknown_overrides = []
  for key, value in overrides.items():
    if key in _FIELDS or key in _T5X_ONLY_FIELDS:
      field_overrides[key] = value
    elif _NAME_RE.match(key) and key.upper() == key:
      macros[key] = _Value(repr(value), "override")
    else:
      unknown_overrides.append(key)
  if unknown_overrides:
    raise ValueError(f"config_from_gin: unknown override(s) {sorted(unknown_overrides)}: not "
                     f"T5Config fields ({sorted(_FIELDS)}) nor macro names (UPPER_CASE)")

  unknown = sorted(k for k in fields if k not in _FIELDS and k not in _T5X_ONLY_FIELDS)
  if unknown:
    raise ValueError(f"{path}: unknown T5Config key(s) {unknown} "
                     f"(at {', '.join(fields[k].where for k in unknown)}); known: "
                     f"{sorted(_FIELDS)}")

  values = dict(_T5X_DEFAULTS)
  where = {}
  for key, value in fields.items():
    if key in field_overrides:
      continue
    values[key] = _evaluate(value, macros, key)
    where[key] = value.where
  values.update(field_overrides)

  for key, supported in _T5X_ONLY_FIELDS.items():
    if key in values:
      if values.pop(key) != supported:
        raise ValueError(f"{where.get(key, 'override')}: T5Config.{key} is not supported by "
                         f"specdec (only {supported!r})")
  if "dtype" in values:
    values["dtype"] = _map_dtype(values["dtype"], where.get("dtype", "override"))
  if "vocab_size" not in values:
    raise ValueError(f"{path}: T5Config.vocab_size is not bound (T5X has no default for it); "
                     "bind it in the gin file or pass vocab_size=...")
  if isinstance(values.get("mlp_activations"), str):
    values["mlp_activations"] = (values["mlp_activations"],)
  if "dropout_rate" in values:
    values["dropout_rate"] = float(values["dropout_rate"])
  try:
    return T5Config(**values)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: invalid T5Config: {e}") from e
