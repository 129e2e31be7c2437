"""Writes a specdec `T5Model` as a Hugging Face `T5ForConditionalGeneration`: the inverse of
`specdec.hf_import` (so `T5Model.from_hf(save_hf(model, path))` gives back the same parameters).

Needs transformers and torch (the `peer` extra: `pip install specdec[peer]`); both are imported
only when a function here is called.

    model = specdec.pretrained.load("ende").target
    hf = specdec.hf_export.to_hf(model)          # float32, eval mode
    specdec.hf_export.save_hf(model, "/tmp/ende_target_hf")

Name mapping (T5X name → HF name; dense kernels `[in, out]` become torch weights `[out, in]`):
  token_embedder/embedding                → shared.weight (and {en,de}coder.embed_tokens)
  {en,de}coder/relpos_bias/rel_embedding  → {en,de}coder.block.0.layer.0.SelfAttention
                                              .relative_attention_bias.weight (transposed)
  encoder/layers_i/attention/{query,key,value,out}
                                          → encoder.block.i.layer.0.SelfAttention.{q,k,v,o}
  decoder/layers_i/self_attention         → decoder.block.i.layer.0.SelfAttention
  decoder/layers_i/encoder_decoder_attention → decoder.block.i.layer.1.EncDecAttention
  mlp/{wi | wi_0, wi_1}, mlp/wo           → DenseReluDense.{wi | wi_0, wi_1}, DenseReluDense.wo
  pre_*_layer_norm/scale, {en,de}coder_norm/scale → layer.n.layer_norm, final_layer_norm
  decoder/logits_dense (untied only)      → lm_head.weight (tied: lm_head = shared)
"""

from __future__ import annotations

from typing import Any

import numpy as np

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
  c = model.config
  params = model.params

  def arr(x) -> np.ndarray:
    return np.asarray(x, np.float32)

  out: dict[str, np.ndarray] = {}

  def dense(name: str, tree) -> None:  # kernel [in, out] → torch Linear weight [out, in]
    out[name + ".weight"] = arr(tree["kernel"]).T

  def attention(prefix: str, tree) -> None:
    for ours, theirs in (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o")):
      dense(f"{prefix}.{theirs}", tree[ours])

  def mlp(prefix: str, tree) -> None:
    if len(c.mlp_activations) == 1:
      dense(prefix + ".wi", tree["wi"])
    else:
      for i in range(len(c.mlp_activations)):
        dense(f"{prefix}.wi_{i}", tree[f"wi_{i}"])
    dense(prefix + ".wo", tree["wo"])

  def norm(name: str, tree) -> None:
    out[name + ".weight"] = arr(tree["scale"])

  embedding = arr(params["token_embedder"]["embedding"])
  out["shared.weight"] = embedding
  out["encoder.embed_tokens.weight"] = embedding
  out["decoder.embed_tokens.weight"] = embedding

  enc = params["encoder"]
  out["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = arr(
      enc["relpos_bias"]["rel_embedding"]).T
  norm("encoder.final_layer_norm", enc["encoder_norm"])
  for i in range(c.num_encoder_layers):
    p, layer = f"encoder.block.{i}.layer", enc[f"layers_{i}"]
    norm(f"{p}.0.layer_norm", layer["pre_attention_layer_norm"])
    attention(f"{p}.0.SelfAttention", layer["attention"])
    norm(f"{p}.1.layer_norm", layer["pre_mlp_layer_norm"])
    mlp(f"{p}.1.DenseReluDense", layer["mlp"])

  dec = params["decoder"]
  out["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = arr(
      dec["relpos_bias"]["rel_embedding"]).T
  norm("decoder.final_layer_norm", dec["decoder_norm"])
  for i in range(c.num_decoder_layers):
    p, layer = f"decoder.block.{i}.layer", dec[f"layers_{i}"]
    norm(f"{p}.0.layer_norm", layer["pre_self_attention_layer_norm"])
    attention(f"{p}.0.SelfAttention", layer["self_attention"])
    norm(f"{p}.1.layer_norm", layer["pre_cross_attention_layer_norm"])
    attention(f"{p}.1.EncDecAttention", layer["encoder_decoder_attention"])
    norm(f"{p}.2.layer_norm", layer["pre_mlp_layer_norm"])
    mlp(f"{p}.2.DenseReluDense", layer["mlp"])
  out["lm_head.weight"] = (embedding if c.logits_via_embedding
                           else arr(dec["logits_dense"]["kernel"]).T)
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
