"""Reads a Hugging Face T5 directory into specdec's config and T5X-named parameter tree.

Needs no transformers: `config.json` is JSON, and `model.safetensors` is read here with numpy
(torch is only needed for the legacy `pytorch_model.bin`).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

import ml_dtypes
import numpy as np

from specdec import hf_names
from specdec.config import T5Config

_SAFETENSORS_DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64,
}
_ACTIVATIONS = {
    "relu": ("relu",), "gated-gelu": ("gelu", "linear"), "gated-relu": ("relu", "linear"),
    "gelu": ("gelu_exact",), "gated-silu": ("silu", "linear"), "silu": ("silu",),
}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """name → array for every tensor of a safetensors file."""
  with open(path, "rb") as f:
    data = f.read()
  try:
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
  except (struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt safetensors file {path}: {e}") from e
  body = data[8 + header_len:]
  tensors = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _SAFETENSORS_DTYPES:
      raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    start, end = info["data_offsets"]
    if end > len(body):
      raise ValueError(f"Corrupt safetensors file {path}: tensor {name} is truncated")
    array = np.frombuffer(body[start:end], dtype=_SAFETENSORS_DTYPES[info["dtype"]])
    tensors[name] = array.reshape(info["shape"])
  return tensors


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  safetensors = os.path.join(path, "model.safetensors")
  if os.path.isfile(safetensors):
    return read_safetensors(safetensors)
  bin_path = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(bin_path):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ValueError(f"{bin_path} needs torch to read; install specdec[peer] or convert the "
                       "directory to model.safetensors") from e
    state = torch.load(bin_path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state.items()}
  raise ValueError(f"No weights in {path}: expected model.safetensors or pytorch_model.bin")


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
  state = {k: np.asarray(v, np.float32) for k, v in _read_state_dict(path).items()}
  # Saved configs are not reliable about tying: trust the weights first. A missing lm_head
  # means tied; an lm_head that differs from the embedding is a separate (untied) head.
  lm_head = state.get("lm_head.weight")
  if lm_head is None:
    tied = True
  elif not hf.get("tie_word_embeddings", True):
    tied = False
  else:
    tied = bool(np.array_equal(lm_head, state["shared.weight"]))
  config = config_from_hf(hf, tied=tied, dtype=dtype, source=config_path)
  return config, _convert(state, config, source=path)


def _convert(state: dict[str, np.ndarray], config: T5Config, *, source: str) -> dict[str, Any]:
  """HF state dict → T5X-named tree, through the shared `hf_names.name_map`."""
  tree: dict[str, Any] = {}
  for path, hf_name, transpose in hf_names.name_map(config):
    if hf_name not in state:
      raise ValueError(f"{source}: weights lack {hf_name}")
    node = tree
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = state[hf_name].T if transpose else state[hf_name]
  return tree
