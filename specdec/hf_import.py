"""Reads a Hugging Face T5 directory into specdec's config and T5X-named parameter tree.

Needs no transformers: `config.json` is JSON, and the weights are read with the `safetensors`
library (memory-mapped; bfloat16 through ml_dtypes) or, for the legacy `.bin` format, with torch
(imported only then). Both the single-file and the sharded layouts that `save_pretrained` writes
are read (the first one found, in this order):

  model.safetensors   or  model.safetensors.index.json + model-0000i-of-0000N.safetensors
  pytorch_model.bin   or  pytorch_model.bin.index.json + pytorch_model-0000i-of-0000N.bin

A missing shard, index or file is a ValueError that names it. Tensors are converted one at a time
into the float32 tree, so a large checkpoint is never held in memory twice; tensors the tree does
not use (HF's copies of the embedding) are never read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any, Callable

import ml_dtypes  # Also registers numpy's bfloat16, which safetensors' numpy reader needs.
import numpy as np
from safetensors import safe_open

from specdec import hf_names
from specdec.config import T5Config

_ACTIVATIONS = {
    "relu": ("relu",), "gated-gelu": ("gelu", "linear"), "gated-relu": ("relu", "linear"),
    "gelu": ("gelu_exact",), "gated-silu": ("silu", "linear"), "silu": ("silu",),
}
# (single file, index of a sharded checkpoint, shard file name pattern), in transformers' order
# of preference.
_LAYOUTS = (
    ("model.safetensors", "model.safetensors.index.json",
     re.compile(r"^model-\d+-of-\d+\.safetensors$")),
    ("pytorch_model.bin", "pytorch_model.bin.index.json",
     re.compile(r"^pytorch_model-\d+-of-\d+\.bin$")),
)


def _read_index(index_path: str) -> dict[str, str]:
  """tensor name → shard path, from a sharded checkpoint's index; every shard checked to exist."""
  try:
    with open(index_path, encoding="utf-8") as f:
      index = json.load(f)
  except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt shard index {index_path}: {e}") from e
  weight_map = index.get("weight_map") if isinstance(index, dict) else None
  if not isinstance(weight_map, dict) or not all(
      isinstance(v, str) and v and os.path.basename(v) == v for v in weight_map.values()):
    raise ValueError(f"Corrupt shard index {index_path}: expected a 'weight_map' of tensor name "
                     "→ shard file name")
  folder = os.path.dirname(index_path)
  missing = sorted({v for v in weight_map.values() if not os.path.isfile(os.path.join(folder, v))})
  if missing:
    raise ValueError(f"Missing shard(s) of {index_path}: "
                     + ", ".join(os.path.join(folder, v) for v in missing))
  return {name: os.path.join(folder, shard) for name, shard in weight_map.items()}


def _weight_files(path: str) -> tuple[str, dict[str, str]]:
  """('safetensors' or 'bin', tensor name → file), or {'': file} for one unsharded file."""
  names = os.listdir(path) if os.path.isdir(path) else []
  for single, index, shard_re in _LAYOUTS:
    kind = single.rsplit(".", 1)[1]
    if os.path.isfile(os.path.join(path, single)):
      return kind, {"": os.path.join(path, single)}
    if os.path.isfile(os.path.join(path, index)):
      return kind, _read_index(os.path.join(path, index))
    shards = sorted(n for n in names if shard_re.match(n))
    if shards:
      raise ValueError(f"{path} holds sharded weights ({', '.join(shards)}) but not their index "
                       f"{os.path.join(path, index)}")
  raise ValueError(f"No weights in {path}: expected model.safetensors, "
                   "model.safetensors.index.json (with its shards), pytorch_model.bin or "
                   "pytorch_model.bin.index.json (with its shards)")


def _open_safetensors(file: str, stack: contextlib.ExitStack) -> tuple[Any, Callable]:
  try:
    handle = stack.enter_context(safe_open(file, framework="numpy"))
  except Exception as e:  # SafetensorError (a corrupt header or a truncated file), OSError.
    raise ValueError(f"Corrupt safetensors file {file}: {e}") from e
  return set(handle.keys()), handle.get_tensor


def _open_bin(file: str, stack: contextlib.ExitStack) -> tuple[Any, Callable]:
  del stack
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError(f"{file} needs torch to read; install specdec[peer] or convert the "
                     "directory to model.safetensors") from e
  try:
    try:  # Memory-mapped: tensors are paged in as they are converted.
      state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # A pre-zipfile (torch < 1.6) file cannot be memory-mapped.
      state = torch.load(file, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle, zipfile and torch errors; name the file either way.
    raise ValueError(f"Cannot read {file}: {e}") from e
  if not isinstance(state, dict):
    raise ValueError(f"{file} holds a {type(state).__name__}, not a state dict")
  return set(state), lambda name: state[name].float().numpy()


class _Weights:
  """The float32 tensors of a HF directory by name, each read from its file when asked for."""

  def __init__(self, path: str, stack: contextlib.ExitStack):
    self._path = path
    self._stack = stack
    kind, files = _weight_files(path)
    self._open = _open_safetensors if kind == "safetensors" else _open_bin
    self._files = files
    self._readers: dict[str, tuple[Any, Callable]] = {}
    if "" in files:  # One file: its own table of contents names the tensors.
      names, _ = self._reader(files[""])
      self._files = {name: files[""] for name in names}
    self.names = frozenset(self._files)

  def _reader(self, file: str) -> tuple[Any, Callable]:
    if file not in self._readers:
      self._readers[file] = self._open(file, self._stack)
    return self._readers[file]

  def __contains__(self, name: str) -> bool:
    return name in self.names

  def __getitem__(self, name: str) -> np.ndarray:
    if name not in self.names:
      raise ValueError(f"{self._path}: weights lack {name}")
    file = self._files[name]
    names, get = self._reader(file)
    if name not in names:
      raise ValueError(f"{file} lacks {name}, which its shard index places there")
    array = np.asarray(get(name))
    if array.dtype.kind != "f" and array.dtype != ml_dtypes.bfloat16:
      raise ValueError(f"{file}: tensor {name} has unsupported dtype {array.dtype}")
    return array.astype(np.float32)  # A copy that owns its memory, whatever the file does.


def config_from_hf(hf: dict[str, Any], *, tied: bool, dtype: str, source: str) -> T5Config:
  if hf.get("model_type") != "t5":
    raise ValueError(f"{source} is not a T5 config (model_type={hf.get('model_type')!r})")
  proj = hf.get("feed_forward_proj", "relu")
  if proj not in _ACTIVATIONS:
    raise ValueError(f"{source}: unsupported feed_forward_proj {proj!r}")
  try:
    return T5Config(
        vocab_size=hf["vocab_size"], emb_dim=hf["d_model"], num_heads=hf["num_heads"],
        num_encoder_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        head_dim=hf["d_kv"], mlp_dim=hf["d_ff"], mlp_activations=_ACTIVATIONS[proj],
        dropout_rate=float(hf.get("dropout_rate", 0.0)), logits_via_embedding=tied, dtype=dtype,
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128))
  except KeyError as e:
    raise ValueError(f"{source}: config.json lacks {e.args[0]!r}") from e


def load(path: str, *, dtype: str = "float32") -> tuple[T5Config, dict[str, Any]]:
  """A HF T5 directory → (T5Config, T5X-named parameter tree of float32 numpy arrays)."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isfile(config_path):
    raise ValueError(f"Missing file {config_path}")
  try:
    with open(config_path) as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt {config_path}: {e}") from e
  if not isinstance(hf, dict):
    raise ValueError(f"{config_path} is not a T5 config")
  if hf.get("model_type") != "t5":
    raise ValueError(f"{config_path} is not a T5 config (model_type={hf.get('model_type')!r})")
  with contextlib.ExitStack() as stack:
    weights = _Weights(path, stack)
    # Saved configs are not reliable about tying: trust the weights first. A missing lm_head
    # means tied; an lm_head that differs from the embedding is a separate (untied) head.
    if "lm_head.weight" not in weights:
      tied = True
    elif not hf.get("tie_word_embeddings", True):
      tied = False
    else:
      tied = bool(np.array_equal(weights["lm_head.weight"], weights["shared.weight"]))
    config = config_from_hf(hf, tied=tied, dtype=dtype, source=config_path)
    return config, _convert(weights, config)


def _convert(weights: _Weights, config: T5Config) -> dict[str, Any]:
  """HF tensors → T5X-named tree, through the shared `hf_names.name_map`, one tensor at a time."""
  tree: dict[str, Any] = {}
  for path, hf_name, transpose in hf_names.name_map(config):
    array = weights[hf_name]
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = array.T if transpose else array
  return tree
