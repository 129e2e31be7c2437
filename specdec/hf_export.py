"""Writes a specdec `T5Model` as a Hugging Face `T5ForConditionalGeneration`: the inverse of
`specdec.hf_import` (so `T5Model.from_hf(save_hf(model, path))` gives back the same parameters).

Needs transformers and torch (the `peer` extra: `pip install specdec[peer]`); both are imported
only when a function here is called.

    model = specdec.pretrained.load("ende").target
    hf = specdec.hf_export.to_hf(model)          # float32, eval mode
    specdec.hf_export.save_hf(model, "/tmp/ende_target_hf")

The name mapping is `specdec.hf_names.name_map` (shared with `specdec.hf_import`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from specdec import hf_names
from specdec.model import T5Model

# specdec mlp_activations → HF feed_forward_proj. Only the two T5 variants whose HF activation
# is the same function as specdec's: HF's 'gated-gelu' is the tanh-approximate GELU ("gelu_new"),
# which is specdec's 'gelu' (flax nn.gelu, approximate=True).
_FEED_FORWARD_PROJ = {("gelu", "linear"): "gated-gelu", ("relu",): "relu"}


def _import_transformers():
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "specdec.hf_export needs torch and transformers: pip install 'specdec[peer]' "
        f"(missing: {e.name})") from e
  return torch, transformers


def hf_config(model: T5Model) -> Any:
  """The `transformers.T5Config` for `model` (dropout 0: exported models are for inference)."""
  if not isinstance(model, T5Model):
    raise TypeError(f"model must be a specdec.T5Model, got {type(model).__name__}")
  _, transformers = _import_transformers()
  c = model.config
  acts = tuple(c.mlp_activations)
  if acts not in _FEED_FORWARD_PROJ:
    raise ValueError(f"model.config.mlp_activations={acts} has no Hugging Face T5 equivalent; "
                     f"exportable: {sorted(_FEED_FORWARD_PROJ)}")
  return transformers.T5Config(
      vocab_size=c.vocab_size, d_model=c.emb_dim, d_kv=c.head_dim, d_ff=c.mlp_dim,
      num_layers=c.num_encoder_layers, num_decoder_layers=c.num_decoder_layers,
      num_heads=c.num_heads, relative_attention_num_buckets=c.relative_attention_num_buckets,
      relative_attention_max_distance=c.relative_attention_max_distance,
      feed_forward_proj=_FEED_FORWARD_PROJ[acts], tie_word_embeddings=c.logits_via_embedding,
      dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
      is_encoder_decoder=True)


def state_dict(model: T5Model) -> dict[str, np.ndarray]:
  """HF T5 parameter name → float32 numpy array, for every tensor of HF's `state_dict()`."""
  out: dict[str, np.ndarray] = {}
  for path, hf_name, transpose in hf_names.name_map(model.config):
    value = model.params
    for key in path:
      value = value[key]
    value = np.asarray(value, np.float32)
    out[hf_name] = value.T if transpose else value
  # Aliases HF keeps in its state dict: the embedding per stack, and the tied output head.
  out["encoder.embed_tokens.weight"] = out["shared.weight"]
  out["decoder.embed_tokens.weight"] = out["shared.weight"]
  if model.config.logits_via_embedding:
    out["lm_head.weight"] = out["shared.weight"]
  return out


def to_hf(model: T5Model) -> Any:
  """`model` as a float32 `transformers.T5ForConditionalGeneration` in eval mode.

  Whatever `model.config.dtype` is, the exported weights and activations are float32 (specdec
  stores parameters in float32). Tied models (`logits_via_embedding=True`) get
  `tie_word_embeddings=True`, which in HF also scales the last hidden state by d_model**-0.5,
  as specdec does.
  """
  torch, transformers = _import_transformers()
  config = hf_config(model)
  hf = transformers.T5ForConditionalGeneration(config).to(torch.float32)
  expected = hf.state_dict()
  ours = state_dict(model)
  if set(ours) != set(expected):  # A transformers version with other names: say which.
    raise ValueError(
        "HF T5 parameter names differ from the export's: missing "
        f"{sorted(set(expected) - set(ours))}, unexpected {sorted(set(ours) - set(expected))}")
  for name, value in ours.items():
    if tuple(expected[name].shape) != value.shape:
      raise ValueError(f"{name}: HF expects shape {tuple(expected[name].shape)}, export has "
                       f"{value.shape}")
  # Copies: jax-backed numpy arrays are read-only, and the HF model must own its weights.
  hf.load_state_dict({k: torch.tensor(np.array(v, np.float32)) for k, v in ours.items()},
                     strict=True)
  if config.tie_word_embeddings:
    hf.tie_weights()
  return hf.eval()


def save_hf(model: T5Model, path: str) -> str:
  """Writes `path/config.json` and `path/model.safetensors` (readable by `T5Model.from_hf` and
  by `transformers.T5ForConditionalGeneration.from_pretrained`); returns `path`."""
  if not isinstance(path, str) or not path:
    raise TypeError(f"path must be a non-empty string, got {path!r}")
  hf = to_hf(model)
  hf.save_pretrained(path, safe_serialization=True)
  return path
