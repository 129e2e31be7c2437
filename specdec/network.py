"""The T5 network in Flax linen, with T5X's parameter names and a block decoder.

The parameter tree is T5X's (`t5x/examples/t5/network.py`): `token_embedder/embedding`,
`encoder/layers_0/attention/{query,key,value,out}/kernel`, `encoder/relpos_bias/rel_embedding`,
`decoder/layers_0/{self_attention,encoder_decoder_attention,mlp}/...`, `decoder/logits_dense/kernel`,
... with T5X's shapes (attention kernels are stored flat, `[emb_dim, num_heads * head_dim]`), so a
T5X checkpoint maps one to one. Every parameter carries T5X's logical axis names (`embed`, `mlp`,
`joined_kv`, `heads`, `vocab`, `relpos_buckets`) for rule-based sharding.

Unlike T5X's decoder, `Transformer.decode` feeds a *block* of k >= 1 tokens per row, each row at its
own position, against an explicit key/value cache (see `specdec.cache`): this is what lets a target
score gamma draft tokens in one pass.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from specdec.cache import self_cache_shapes, write_rows
from specdec.config import T5Config

Array = jax.Array
_NEG_INF = -1e10  # T5X's mask value: large but finite, so fully masked rows stay finite.

_variance_scaling = nn.initializers.variance_scaling


def _param(module: nn.Module, name: str, init: Callable, shape: Sequence[int],
           axes: tuple[str, ...]) -> Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)


def _activation(name: str) -> Callable[[Array], Array]:
  return {"relu": nn.relu, "gelu": nn.gelu, "gelu_exact": functools.partial(nn.gelu, approximate=False),
          "silu": nn.silu, "linear": lambda x: x}[name]


class Dense(nn.Module):
  """A bias-free dense layer whose kernel is stored 2-D, as T5X's `DenseGeneral` stores it."""
  features: int
  axes: tuple[str, str]
  dtype: jnp.dtype
  kernel_init: Callable = _variance_scaling(1.0, "fan_in", "truncated_normal")

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = _param(self, "kernel", self.kernel_init, (x.shape[-1], self.features), self.axes)
    return jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))


class RMSNorm(nn.Module):
  """T5's layer norm: no mean subtraction, no bias, statistics in float32."""
  dtype: jnp.dtype
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = _param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("embed",))
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return (x * scale).astype(self.dtype)


class Embed(nn.Module):
  """Token embedding `[vocab, embed]`; `attend` computes tied logits against it."""
  config: T5Config

  def setup(self):
    c = self.config
    self.embedding = _param(self, "embedding", nn.initializers.normal(1.0),
                            (c.vocab_size, c.emb_dim), ("vocab", "embed"))

  def __call__(self, tokens: Array) -> Array:
    return jnp.take(self.embedding, tokens, axis=0).astype(self.config.dtype)

  def attend(self, x: Array) -> Array:
    return jnp.dot(x.astype(jnp.float32), self.embedding.T)


def relative_position_bucket_table(*, bidirectional: bool, num_buckets: int,
                                   max_distance: int) -> np.ndarray:
  """Bucket of every relative position `key - query` in [-max_distance, max_distance].

  Mesh TensorFlow's bucketing as T5X computes it (numpy, float32). Positions farther apart than
  `max_distance` share the last bucket, so `table[clip(rel, -d, d) + d]` buckets any distance.
  Returns int32 `[2 * max_distance + 1]`.
  """
  relative = np.arange(-max_distance, max_distance + 1)
  n = -relative
  bucket = np.zeros_like(n)
  if bidirectional:
    num_buckets //= 2
    bucket += (n < 0).astype(n.dtype) * num_buckets
    n = np.abs(n)
  else:
    n = np.maximum(n, 0)
  max_exact = num_buckets // 2
  with np.errstate(divide="ignore"):
    large = max_exact + (
        np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
        / np.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(np.int32)
  large = np.minimum(large, num_buckets - 1)
  bucket += np.where(n < max_exact, n, large)
  return bucket.astype(np.int32)


class RelativePositionBias(nn.Module):
  """One learned scalar per (head, bucket), shared by all layers of a stack."""
  config: T5Config
  bidirectional: bool

  def setup(self):
    c = self.config
    self.rel_embedding = _param(
        self, "rel_embedding", _variance_scaling(1.0, "fan_avg", "uniform"),
        (c.num_heads, c.relative_attention_num_buckets), ("heads", "relpos_buckets"))

  def __call__(self, relative_position: Array) -> Array:
    """int `[...]` key-minus-query positions → float32 `[..., heads]` biases."""
    d = self.config.relative_attention_max_distance
    table = jnp.asarray(relative_position_bucket_table(
        bidirectional=self.bidirectional, num_buckets=self.config.relative_attention_num_buckets,
        max_distance=d))
    buckets = table[jnp.clip(relative_position, -d, d) + d]
    return jnp.take(self.rel_embedding.T, buckets, axis=0)


class Attention(nn.Module):
  """Multi-head attention without the 1/sqrt(head_dim) scale (T5 folds it into the query init)."""
  config: T5Config

  def setup(self):
    c = self.config
    inner = c.num_heads * c.head_dim
    kernel_init = _variance_scaling(1.0, "fan_in", "normal")
    query_init = lambda *args: kernel_init(*args) / np.sqrt(c.head_dim)
    self.query = Dense(inner, ("embed", "joined_kv"), c.dtype, query_init)
    self.key = Dense(inner, ("embed", "joined_kv"), c.dtype, kernel_init)
    self.value = Dense(inner, ("embed", "joined_kv"), c.dtype, kernel_init)
    self.out = Dense(c.emb_dim, ("joined_kv", "embed"), c.dtype, kernel_init)
    self.dropout = nn.Dropout(c.dropout_rate)

  def _heads(self, dense: Dense, x: Array) -> Array:
    return dense(x).reshape(x.shape[:-1] + (self.config.num_heads, self.config.head_dim))

  def project_kv(self, x: Array) -> tuple[Array, Array]:
    """`[B, T, emb]` → keys `[B, heads, head_dim, T]` and values `[B, heads, T, head_dim]`: the
    operands of the attention's two products in the form XLA's dots take them (a key layout of
    `[B, T, heads, head_dim]` costs a transpose of the whole cache in every decoder pass)."""
    keys = jnp.transpose(self._heads(self.key, x), (0, 2, 3, 1))
    return keys, jnp.swapaxes(self._heads(self.value, x), 1, 2)

  def __call__(self, x: Array, keys: Array, values: Array, bias: Array, *,
               deterministic: bool) -> Array:
    """x `[B, q, emb]` attends to keys `[B, heads, head_dim, k]` and values `[B, heads, k,
    head_dim]` (see `project_kv`); bias `[B|1, heads, q, k]`."""
    query = self._heads(self.query, x)
    weights = jnp.einsum("bqhd,bhdk->bhqk", query, keys.astype(query.dtype))
    weights = jax.nn.softmax(weights.astype(jnp.float32) + bias).astype(self.config.dtype)
    weights = self.dropout(weights, deterministic=deterministic)
    y = jnp.einsum("bhqk,bhkd->bqhd", weights, values.astype(weights.dtype))
    return self.out(y.reshape(y.shape[:2] + (-1,)))


class MlpBlock(nn.Module):
  """T5's feed-forward block: the product of one projection per activation, then `wo`."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    c = self.config
    acts = c.mlp_activations
    hidden = 1.0
    for i, act in enumerate(acts):
      name = f"wi_{i}" if len(acts) > 1 else "wi"
      hidden = hidden * _activation(act)(Dense(c.mlp_dim, ("embed", "mlp"), c.dtype, name=name)(x))
    hidden = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))(hidden, deterministic=deterministic)
    return Dense(c.emb_dim, ("mlp", "embed"), c.dtype, name="wo")(hidden)


class EncoderLayer(nn.Module):
  config: T5Config

  def setup(self):
    c = self.config
    self.pre_attention_layer_norm = RMSNorm(c.dtype)
    self.attention = Attention(c)
    self.pre_mlp_layer_norm = RMSNorm(c.dtype)
    self.mlp = MlpBlock(c)
    self.dropout = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, x: Array, bias: Array, *, deterministic: bool) -> Array:
    y = self.pre_attention_layer_norm(x)
    keys, values = self.attention.project_kv(y)
    x = x + self.dropout(self.attention(y, keys, values, bias, deterministic=deterministic),
                         deterministic=deterministic)
    y = self.mlp(self.pre_mlp_layer_norm(x), deterministic=deterministic)
    return x + self.dropout(y, deterministic=deterministic)


class DecoderLayer(nn.Module):
  config: T5Config

  def setup(self):
    c = self.config
    self.pre_self_attention_layer_norm = RMSNorm(c.dtype)
    self.self_attention = Attention(c)
    self.pre_cross_attention_layer_norm = RMSNorm(c.dtype)
    self.encoder_decoder_attention = Attention(c)
    self.pre_mlp_layer_norm = RMSNorm(c.dtype)
    self.mlp = MlpBlock(c)
    self.dropout = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, x: Array, *, self_keys: Array, self_values: Array, position: Array,
               self_bias: Array, cross_keys: Array, cross_values: Array, cross_bias: Array,
               deterministic: bool) -> tuple[Array, Array, Array]:
    """Feeds a block x `[B, k, emb]` written at each row's `position` `[B]`.

    self_keys/self_values: this layer's cache, keys `[B, heads, head_dim, L]` and values `[B,
    heads, L, head_dim]` (see `Attention.project_kv`); the block's keys and values replace entries
    position..position+k-1 of each row, and the updated cache is returned.
    """
    y = self.pre_self_attention_layer_norm(x)
    new_keys, new_values = self.self_attention.project_kv(y)
    self_keys = write_rows(self_keys, new_keys.astype(self_keys.dtype), position, axis=3)
    self_values = write_rows(self_values, new_values.astype(self_values.dtype), position, axis=2)
    y = self.self_attention(y, self_keys, self_values, self_bias, deterministic=deterministic)
    x = x + self.dropout(y, deterministic=deterministic)
    y = self.pre_cross_attention_layer_norm(x)
    y = self.encoder_decoder_attention(y, cross_keys, cross_values, cross_bias,
                                       deterministic=deterministic)
    x = x + self.dropout(y, deterministic=deterministic)
    y = self.mlp(self.pre_mlp_layer_norm(x), deterministic=deterministic)
    return x + self.dropout(y, deterministic=deterministic), self_keys, self_values


def _padding_bias(mask: Array) -> Array:
  """bool `[B, S]` key mask → float32 `[B, 1, 1, S]` additive bias."""
  return jnp.where(mask, 0.0, _NEG_INF).astype(jnp.float32)[:, None, None, :]


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: Embed

  def setup(self):
    c = self.config
    self.relpos_bias = RelativePositionBias(c, bidirectional=True)
    self.layers = [EncoderLayer(c) for _ in range(c.num_encoder_layers)]
    self.encoder_norm = RMSNorm(c.dtype)
    self.dropout = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))

  def __call__(self, tokens: Array, *, deterministic: bool) -> Array:
    """int32 `[B, S]` (0 = padding) → `[B, S, emb]` in the config's dtype."""
    mask = tokens > 0
    positions = jnp.arange(tokens.shape[1])
    bias = self.relpos_bias(positions[None, :] - positions[:, None])  # [S, S, heads]
    bias = jnp.transpose(bias, (2, 0, 1))[None]  # [1, heads, S, S]
    pair_mask = mask[:, None, :, None] & mask[:, None, None, :]
    bias = bias + jnp.where(pair_mask, 0.0, _NEG_INF)
    x = self.dropout(self.shared_embedding(tokens), deterministic=deterministic)
    for layer in self.layers:
      x = layer(x, bias, deterministic=deterministic)
    return self.dropout(self.encoder_norm(x), deterministic=deterministic)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: Embed

  def setup(self):
    c = self.config
    self.relpos_bias = RelativePositionBias(c, bidirectional=False)
    self.layers = [DecoderLayer(c) for _ in range(c.num_decoder_layers)]
    self.decoder_norm = RMSNorm(c.dtype)
    self.dropout = nn.Dropout(c.dropout_rate, broadcast_dims=(-2,))
    if not c.logits_via_embedding:
      self.logits_dense = Dense(c.vocab_size, ("embed", "vocab"), jnp.float32)

  def cross_kv(self, encoded: Array) -> tuple[Array, Array]:
    """Encoder output `[B, S, emb]` → cross-attention keys `[layers, B, heads, head_dim, S]` and
    values `[layers, B, heads, S, head_dim]`."""
    kv = [layer.encoder_decoder_attention.project_kv(encoded) for layer in self.layers]
    return jnp.stack([k for k, _ in kv]), jnp.stack([v for _, v in kv])

  def __call__(self, tokens: Array, *, position: Array, self_keys: Array, self_values: Array,
               cross_keys: Array, cross_values: Array, encoder_mask: Array,
               deterministic: bool) -> tuple[Array, Array, Array]:
    """Feeds tokens `[B, k]` at `position` `[B]`; returns float32 logits `[B, k, vocab]` and the
    updated self-attention cache (keys `[layers, B, heads, head_dim, L]`, values `[layers, B,
    heads, L, head_dim]`).

    Query i of row b sits at position[b] + i and attends to cache entries 0..position[b] + i:
    causal inside the block and over the row's prefix; entries past it are never attended.
    """
    c = self.config
    cache_length = self_values.shape[3]
    query_pos = position[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, k]
    key_pos = jnp.arange(cache_length)  # [L]
    relative = key_pos[None, None, :] - query_pos[:, :, None]  # [B, k, L]
    self_bias = jnp.transpose(self.relpos_bias(relative), (0, 3, 1, 2))  # [B, heads, k, L]
    self_bias = self_bias + jnp.where(relative <= 0, 0.0, _NEG_INF)[:, None]
    cross_bias = _padding_bias(encoder_mask)

    x = self.dropout(self.shared_embedding(tokens), deterministic=deterministic)
    new_keys, new_values = [], []
    for i, layer in enumerate(self.layers):
      x, k, v = layer(x, self_keys=self_keys[i], self_values=self_values[i], position=position,
                      self_bias=self_bias, cross_keys=cross_keys[i], cross_values=cross_values[i],
                      cross_bias=cross_bias, deterministic=deterministic)
      new_keys.append(k)
      new_values.append(v)
    x = self.dropout(self.decoder_norm(x), deterministic=deterministic)
    if c.logits_via_embedding:
      logits = self.shared_embedding.attend(x) / np.sqrt(c.emb_dim)
    else:
      logits = self.logits_dense(x)
    return logits.astype(jnp.float32), jnp.stack(new_keys), jnp.stack(new_values)


class Transformer(nn.Module):
  """T5 encoder-decoder. Methods are applied with `Transformer(config).apply(..., method=...)`."""
  config: T5Config

  def setup(self):
    self.token_embedder = Embed(self.config)
    self.encoder = Encoder(self.config, shared_embedding=self.token_embedder)
    self.decoder = Decoder(self.config, shared_embedding=self.token_embedder)

  def encode(self, encoder_input_tokens: Array, *, deterministic: bool = True) -> Array:
    return self.encoder(encoder_input_tokens, deterministic=deterministic)

  def cross_kv(self, encoded: Array) -> tuple[Array, Array]:
    return self.decoder.cross_kv(encoded)

  def decode(self, tokens: Array, **kwargs) -> tuple[Array, Array, Array]:
    return self.decoder(tokens, **kwargs)

  def decode_encoded(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array, *,
                     deterministic: bool = True) -> Array:
    """Teacher forcing from the encoder's output `[B, S, emb]`: → float32 logits `[B, T, vocab]`."""
    return teacher_forced_decode(self.decoder, encoded, encoder_mask, decoder_input_tokens,
                                 deterministic=deterministic)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array, *,
               deterministic: bool = True) -> Array:
    """Teacher forcing: int32 `[B, S]`, `[B, T]` → float32 logits `[B, T, vocab]`."""
    encoded = self.encode(encoder_input_tokens, deterministic=deterministic)
    return self.decode_encoded(encoded, encoder_input_tokens > 0, decoder_input_tokens,
                               deterministic=deterministic)


def teacher_forced_decode(decoder: Decoder, encoded: Array, encoder_mask: Array,
                          decoder_input_tokens: Array, *, deterministic: bool) -> Array:
  """`decoder` over whole decoder inputs `[B, T]` at once (an empty cache of length T), reading
  the encoder output `[B, S, emb]` → float32 logits `[B, T, vocab]`."""
  c = decoder.config
  cross_keys, cross_values = decoder.cross_kv(encoded)
  batch, length = decoder_input_tokens.shape
  key_shape, value_shape = self_cache_shapes(c, batch=batch, length=length)
  logits, _, _ = decoder(
      decoder_input_tokens, position=jnp.zeros((batch,), jnp.int32),
      self_keys=jnp.zeros(key_shape, c.dtype), self_values=jnp.zeros(value_shape, c.dtype),
      cross_keys=cross_keys, cross_values=cross_values, encoder_mask=encoder_mask,
      deterministic=deterministic)
  return logits


@functools.lru_cache(maxsize=None)
def transformer(config: T5Config) -> Transformer:
  """One (hashable, stateless) module object per config."""
  return Transformer(config)
