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
  def take(name: str) -> np.ndarray:
    if name not in state:
      raise ValueError(f"{source}: weights lack {name}")
    return state[name]

  def dense(name: str) -> dict[str, np.ndarray]:  # torch Linear [out, in] → kernel [in, out]
    return {"kernel": take(name + ".weight").T}

  def attention(prefix: str) -> dict[str, Any]:
    return {ours: dense(f"{prefix}.{theirs}") for ours, theirs in
            (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))}

  def mlp(prefix: str) -> dict[str, Any]:
    if len(config.mlp_activations) == 1:
      return {"wi": dense(prefix + ".wi"), "wo": dense(prefix + ".wo")}
    out = {f"wi_{i}": dense(f"{prefix}.wi_{i}") for i in range(len(config.mlp_activations))}
    out["wo"] = dense(prefix + ".wo")
    return out

  def norm(name: str) -> dict[str, np.ndarray]:
    return {"scale": take(name + ".weight")}

  encoder = {"relpos_bias": {"rel_embedding": take(
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").T},
             "encoder_norm": norm("encoder.final_layer_norm")}
  for i in range(config.num_encoder_layers):
    p = f"encoder.block.{i}.layer"
    encoder[f"layers_{i}"] = {
        "pre_attention_layer_norm": norm(f"{p}.0.layer_norm"),
        "attention": attention(f"{p}.0.SelfAttention"),
        "pre_mlp_layer_norm": norm(f"{p}.1.layer_norm"),
        "mlp": mlp(f"{p}.1.DenseReluDense"),
    }
  decoder = {"relpos_bias": {"rel_embedding": take(
      "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").T},
             "decoder_norm": norm("decoder.final_layer_norm")}
  for i in range(config.num_decoder_layers):
    p = f"decoder.block.{i}.layer"
    decoder[f"layers_{i}"] = {
        "pre_self_attention_layer_norm": norm(f"{p}.0.layer_norm"),
        "self_attention": attention(f"{p}.0.SelfAttention"),
        "pre_cross_attention_layer_norm": norm(f"{p}.1.layer_norm"),
        "encoder_decoder_attention": attention(f"{p}.1.EncDecAttention"),
        "pre_mlp_layer_norm": norm(f"{p}.2.layer_norm"),
        "mlp": mlp(f"{p}.2.DenseReluDense"),
    }
  if not config.logits_via_embedding:
    decoder["logits_dense"] = dense("lm_head")
  return {"token_embedder": {"embedding": take("shared.weight")}, "encoder": encoder,
          "decoder": decoder}
