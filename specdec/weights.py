"""How a model's parameters are stored on disk: float32, bfloat16, or int8 with per-channel scales.

Models compute with float32 parameters; shipped checkpoints need not store them that way. A
`T5Model.save(path, weights=...)` (and `SharedEncoderDraft.save`) writes one of

* 'float32': the parameters as they are;
* 'bfloat16': every leaf rounded to bfloat16 (half the bytes; loads back as those values exactly);
* 'int8': every matrix of at least `INT8_MIN_SIZE` entries as int8 with one float32 scale per
  output channel (symmetric, round to nearest: w ≈ q · scale, |error| ≤ scale / 2), everything else
  as bfloat16 — a quarter of the bytes. The output channel of a kernel `[in, out]` is its column;
  of the token embedding `[vocab, embed]` its row (one scale per token).

Loading dequantizes to float32, so everything measured on a loaded model (BLEU, α, parity,
speed) is measured on exactly what ships. The format is recorded in `path/weights.json`; a
directory without one holds float32 or bfloat16 leaves as orbax wrote them.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
FORMATS = ("float32", "bfloat16", "int8")
FORMAT_FILE = "weights.json"
INT8_MIN_SIZE = 4096  # Smaller matrices (and all vectors) stay bfloat16: no bytes worth saving.


def _reduce_axis(path: tuple[str, ...]) -> int:
  """The axis a leaf's scale is shared along: 0 for kernels `[in, out]` (one scale per column),
  1 for the token embedding `[vocab, embed]` (one scale per token)."""
  return 1 if path[-1] == "embedding" else 0


def _quantized(path: tuple[str, ...], shape: tuple[int, ...]) -> bool:
  return len(shape) == 2 and int(np.prod(shape)) >= INT8_MIN_SIZE


def _items(tree: Any, prefix: tuple[str, ...] = ()):
  if hasattr(tree, "items"):
    for key, value in tree.items():
      yield from _items(value, prefix + (str(key),))
  else:
    yield prefix, tree


def _build(items) -> dict:
  out: dict = {}
  for path, value in items:
    node = out
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  return out


def quantize_int8(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
  """Symmetric per-channel int8: (q int8 of x's shape, scale float32 with `axis` kept as 1)."""
  x = np.asarray(x, np.float32)
  scale = np.max(np.abs(x), axis=axis, keepdims=True) / 127.0
  scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
  q = np.clip(np.rint(x / scale), -127, 127).astype(np.int8)
  return q, scale


def encode(params: Params, weights: str) -> Params:
  """The tree to write for `weights` (see the module docstring)."""
  if weights not in FORMATS:
    raise ValueError(f"weights must be one of {FORMATS}, got {weights!r}")
  if weights == "float32":
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
  if weights == "bfloat16":
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x).astype(jnp.bfloat16), params)
  items = []
  for path, x in _items(jax.device_get(params)):
    x = np.asarray(x, np.float32)
    if _quantized(path, x.shape):
      q, scale = quantize_int8(x, _reduce_axis(path))
      items.append((path, {"int8": q, "scale": scale}))
    else:
      items.append((path, jnp.asarray(x).astype(jnp.bfloat16)))
  return _build(items)


def abstract_encoded(abstract: Params, weights: str) -> Params:
  """The `ShapeDtypeStruct` tree `encode(params, weights)` has, from the float32 one."""
  if weights == "float32":
    return abstract
  items = []
  for path, leaf in _items(abstract):
    if weights == "int8" and _quantized(path, leaf.shape):
      scale_shape = list(leaf.shape)
      scale_shape[_reduce_axis(path)] = 1
      items.append((path, {"int8": jax.ShapeDtypeStruct(leaf.shape, jnp.int8),
                           "scale": jax.ShapeDtypeStruct(tuple(scale_shape), jnp.float32)}))
    else:
      items.append((path, jax.ShapeDtypeStruct(leaf.shape, jnp.bfloat16)))
  return _build(items)


def decode(stored: Params, abstract: Params, weights: str) -> Params:
  """float32 parameters (the structure of `abstract`) from what `encode` wrote."""
  if weights != "int8":
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), stored)
  flat = dict(_items(stored))
  items = []
  for path, _ in _items(abstract):
    if path + ("int8",) in flat:
      q, scale = flat[path + ("int8",)], flat[path + ("scale",)]
      items.append((path, jnp.asarray(q, jnp.float32) * jnp.asarray(scale, jnp.float32)))
    else:
      items.append((path, jnp.asarray(flat[path], jnp.float32)))
  return _build(items)


def write_format(path: str, weights: str) -> None:
  if weights not in FORMATS:
    raise ValueError(f"weights must be one of {FORMATS}, got {weights!r}")
  with open(os.path.join(path, FORMAT_FILE), "w") as f:
    json.dump({"weights": weights, "int8_min_size": INT8_MIN_SIZE}, f, indent=2)


def read_format(path: str) -> str:
  """The stored format of the checkpoint directory `path` (ValueError naming a corrupt file)."""
  file = os.path.join(path, FORMAT_FILE)
  if not os.path.exists(file):
    return "float32"  # Orbax restores float32 and bfloat16 leaves into the float32 target.
  try:
    with open(file) as f:
      weights = json.load(f)["weights"]
  except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt weights format file {file}: {e}") from e
  if weights not in FORMATS:
    raise ValueError(f"{file}: unknown weights format {weights!r}; known: {FORMATS}")
  return weights


def save(path: str, params: Params, *, weights: str) -> None:
  """Writes `params` under `path/params` (orbax) in the `weights` format and records it."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  tree = encode(params, weights)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, "params"), tree, force=True)
  checkpointer.wait_until_finished()
  write_format(path, weights)


def restore(path: str, abstract: Params, *, on_device) -> Params:
  """float32 parameters of the structure `abstract` from `path/params`; ValueError naming the
  directory when they are missing or do not restore. `on_device` places the restore target."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  weights = read_format(path)
  params_path = os.path.join(path, "params")
  if not os.path.isdir(params_path):
    raise ValueError(f"Checkpoint parameters not found: {params_path}")
  try:
    stored = ocp.StandardCheckpointer().restore(
        params_path, on_device(abstract_encoded(abstract, weights)))
  except Exception as e:  # orbax raises many types; name the checkpoint either way.
    raise ValueError(f"Could not restore parameters from {params_path}: {e}") from e
  return decode(stored, abstract, weights)
