"""The one table between specdec's T5X parameter names and Hugging Face T5's.

`hf_import` reads a HF state dict through it and `hf_export` writes one, so the two stay exact
inverses. Each entry is (T5X path, HF name, transpose): dense kernels are `[in, out]` in T5X and
torch `Linear` weights `[out, in]`; the relative-position tables are `[heads, buckets]` in T5X and
`[buckets, heads]` in HF.

  token_embedder/embedding                   shared.weight
  {en,de}coder/relpos_bias/rel_embedding     {en,de}coder.block.0.layer.0.SelfAttention
                                               .relative_attention_bias.weight      (T)
  encoder/layers_i/attention/{query,...}     encoder.block.i.layer.0.SelfAttention.{q,k,v,o}  (T)
  decoder/layers_i/self_attention            decoder.block.i.layer.0.SelfAttention           (T)
  decoder/layers_i/encoder_decoder_attention decoder.block.i.layer.1.EncDecAttention         (T)
  .../mlp/{wi | wi_0, wi_1, ...}, mlp/wo     ....DenseReluDense.{wi | wi_0, wi_1, ...}, .wo  (T)
  pre_*_layer_norm/scale                     .layer.n.layer_norm.weight
  {en,de}coder_norm/scale                    {en,de}coder.final_layer_norm.weight
  decoder/logits_dense/kernel (untied only)  lm_head.weight                                  (T)

HF also stores `{en,de}coder.embed_tokens.weight` (copies of `shared.weight`) and, for tied
models, `lm_head.weight` = `shared.weight`; those aliases are not in the table.
"""

from __future__ import annotations

from typing import Iterator

from specdec.config import T5Config

Path = tuple[str, ...]

_ATTENTION = (("query", "q"), ("key", "k"), ("value", "v"), ("out", "o"))


def _attention(path: Path, prefix: str) -> Iterator[tuple[Path, str, bool]]:
  for ours, theirs in _ATTENTION:
    yield path + (ours, "kernel"), f"{prefix}.{theirs}.weight", True


def _mlp(config: T5Config, path: Path, prefix: str) -> Iterator[tuple[Path, str, bool]]:
  n = len(config.mlp_activations)
  names = ["wi"] if n == 1 else [f"wi_{i}" for i in range(n)]
  for name in names + ["wo"]:
    yield path + (name, "kernel"), f"{prefix}.{name}.weight", True


def _norm(path: Path, prefix: str) -> tuple[Path, str, bool]:
  return path + ("scale",), f"{prefix}.weight", False


def name_map(config: T5Config) -> list[tuple[Path, str, bool]]:
  """(T5X path, HF state-dict name, transpose) for every parameter of a `config` model."""
  entries: list[tuple[Path, str, bool]] = [(("token_embedder", "embedding"), "shared.weight",
                                            False)]
  for stack, layer_count in (("encoder", config.num_encoder_layers),
                             ("decoder", config.num_decoder_layers)):
    entries.append(((stack, "relpos_bias", "rel_embedding"),
                    f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                    True))
    entries.append(_norm((stack, f"{stack}_norm"), f"{stack}.final_layer_norm"))
    for i in range(layer_count):
      path, hf = (stack, f"layers_{i}"), f"{stack}.block.{i}.layer"
      if stack == "encoder":
        sublayers = [("pre_attention_layer_norm", "attention", "SelfAttention")]
      else:
        sublayers = [("pre_self_attention_layer_norm", "self_attention", "SelfAttention"),
                     ("pre_cross_attention_layer_norm", "encoder_decoder_attention",
                      "EncDecAttention")]
      for n, (norm, attention, hf_attention) in enumerate(sublayers):
        entries.append(_norm(path + (norm,), f"{hf}.{n}.layer_norm"))
        entries.extend(_attention(path + (attention,), f"{hf}.{n}.{hf_attention}"))
      n = len(sublayers)
      entries.append(_norm(path + ("pre_mlp_layer_norm",), f"{hf}.{n}.layer_norm"))
      entries.extend(_mlp(config, path + ("mlp",), f"{hf}.{n}.DenseReluDense"))
  if not config.logits_via_embedding:
    entries.append((("decoder", "logits_dense", "kernel"), "lm_head.weight", True))
  return entries
