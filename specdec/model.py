"""`T5Model`: a config and its parameters in one object, usable as a target or as a draft.

A `T5Model` is a pytree (params are its leaves, the config is static), so it can be passed straight
into jitted functions. Besides teacher-forced `logits`, it implements the cached language-model
protocol the decoders use (`start`, `extend`, `rewind`; see `specdec.drafts.Draft`), and `encode`,
which lets a `SharedEncoderDraft` read its encoder output.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from specdec import hf_import, t5x_import
from specdec import weights as weights_lib
from specdec.cache import DecoderCache, check_room, self_cache_shapes
from specdec.config import T5Config
from specdec.network import transformer
# The parameter tree's helpers stay reachable as `specdec.model.*` (partitioning uses them).
from specdec.param_tree import Params, abstract_params, check_params, check_tree, logical_axes
from specdec.param_tree import flatten as _flatten
from specdec.param_tree import init_params as _init_params
from specdec.validation import check_positive_int, check_tokens

Array = jax.Array

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


def on_default_device(abstract_tree: Any) -> Any:
  """`abstract_tree`'s `ShapeDtypeStruct`s, those without a sharding placed on this process's first
  device: an orbax restore target that does not depend on where the checkpoint was written (a
  checkpoint saved on a CPU restores onto a GPU, and back). Leaves that carry a sharding (e.g. a
  mesh's `NamedSharding`) keep it."""
  default = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=getattr(x, "sharding", None) or default),
      abstract_tree)


@functools.partial(jax.jit, static_argnums=0)
def _logits(config: T5Config, params: Params, encoder_tokens: Array, decoder_tokens: Array):
  return transformer(config).apply({"params": params}, encoder_tokens, decoder_tokens)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _start(config: T5Config, params: Params, encoder_tokens: Array, length: int,
           encoded: Array | None = None) -> DecoderCache:
  return start_cache(config, params, encoder_tokens, length, encoded)


def encode(config: T5Config, params: Params, encoder_tokens: Array) -> Array:
  """The encoder's output `[B, S, emb]` (config dtype) for int32 `[B, S]` inputs."""
  net = transformer(config)
  return net.apply({"params": params}, encoder_tokens, method=net.encode)


_encode = jax.jit(encode, static_argnums=0)


def start_cache(config: T5Config, params: Params, encoder_tokens: Array, length: int,
                encoded: Array | None = None) -> DecoderCache:
  """Encodes once (unless given `encoded`, the encoder's output for these inputs), computes
  cross-attention keys/values once, allocates an empty cache."""
  if encoded is None:
    encoded = encode(config, params, encoder_tokens)
  return empty_cache(transformer(config), params, encoded, encoder_tokens > 0, length)


def empty_cache(net: nn.Module, params: Params, encoded: Array, encoder_mask: Array,
                length: int) -> DecoderCache:
  """The decoder cache of `net` (a module with `cross_kv` and `decode` methods and a T5Config
  `config`) for an encoder output `[B, S, emb]`: cross keys/values computed once, `length`
  empty self-attention positions per row."""
  config = net.config
  cross_keys, cross_values = net.apply({"params": params}, encoded, method=net.cross_kv)
  batch = encoded.shape[0]
  key_shape, value_shape = self_cache_shapes(config, batch=batch, length=length)
  return DecoderCache(
      self_keys=jnp.zeros(key_shape, config.dtype),
      self_values=jnp.zeros(value_shape, config.dtype),
      cross_keys=cross_keys, cross_values=cross_values, encoder_mask=encoder_mask,
      position=jnp.zeros((batch,), jnp.int32))


def extend_cache(config: T5Config, params: Params, cache: DecoderCache,
                 tokens: Array) -> tuple[Array, DecoderCache]:
  """Feeds tokens `[B, k]` at each row's position; returns logits `[B, k, V]` and the cache with
  every row's position advanced by k."""
  return extend_with(transformer(config), params, cache, tokens)


def extend_with(net: nn.Module, params: Params, cache: DecoderCache,
                tokens: Array) -> tuple[Array, DecoderCache]:
  """`extend_cache` for any module with a T5 `decode` method (see `empty_cache`)."""
  logits, keys, values = net.apply(
      {"params": params}, tokens, position=cache.position, self_keys=cache.self_keys,
      self_values=cache.self_values, cross_keys=cache.cross_keys,
      cross_values=cache.cross_values, encoder_mask=cache.encoder_mask, deterministic=True,
      method=net.decode)
  cache = cache.replace(self_keys=keys, self_values=values,
                        position=cache.position + tokens.shape[1])
  return logits, cache


_extend = jax.jit(extend_cache, static_argnums=0)


@flax.struct.dataclass
class T5Model:
  """A T5 network (config) with its parameters (T5X's tree, float32)."""
  config: T5Config = flax.struct.field(pytree_node=False)
  params: Params

  # --- construction -------------------------------------------------------------------------

  @classmethod
  def init(cls, config: T5Config, rng: Array | int = 0) -> "T5Model":
    """Random parameters with T5X's initializers."""
    if not isinstance(config, T5Config):
      raise TypeError(f"config must be a T5Config, got {type(config).__name__}")
    if isinstance(rng, int):
      rng = jax.random.PRNGKey(rng)
    return cls(config=config, params=nn.unbox(_init_params(config, rng)))

  @classmethod
  def from_params(cls, config: T5Config, params: Params, *, source: str = "params") -> "T5Model":
    """Wraps a parameter tree after checking it against the config (names every mismatch)."""
    check_params(config, params, source=source)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    return cls(config=config, params=params)

  @classmethod
  def from_hf(cls, path: str, *, dtype: str = "float32") -> "T5Model":
    """Loads a Hugging Face T5 directory, v1.0 (tied) or v1.1 (untied): `config.json` and
    `model.safetensors` or `pytorch_model.bin`, or their sharded forms (an index
    `*.index.json` and its shards, as the large public checkpoints come); see `hf_import`."""
    config, params = hf_import.load(path, dtype=dtype)
    return cls.from_params(config, params, source=path)

  @classmethod
  def from_t5x(cls, checkpoint_dir: str, config: T5Config) -> "T5Model":
    """Loads the model parameters (`target.*`) of a T5X checkpoint directory."""
    params = t5x_import.load_params(checkpoint_dir, config)
    return cls.from_params(config, params, source=checkpoint_dir)

  def save(self, path: str, *, weights: str = "float32") -> None:
    """Writes `path/config.json` and the parameters with orbax under `path/params`, stored as
    `weights`: 'float32', 'bfloat16' or 'int8' (per-channel scales; see `specdec.weights`)."""
    path = os.path.abspath(path)
    if weights not in weights_lib.FORMATS:
      raise ValueError(f"weights must be one of {weights_lib.FORMATS}, got {weights!r}")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
      json.dump(config_to_dict(self.config), f, indent=2, sort_keys=True)
    weights_lib.save(path, self.params, weights=weights)

  @classmethod
  def load(cls, path: str) -> "T5Model":
    """Reads what `save` wrote (float32 parameters whatever the stored format); a missing or
    corrupt file raises ValueError naming it."""
    path = os.path.abspath(path)
    config = load_config(os.path.join(path, CONFIG_FILE))
    params = weights_lib.restore(path, abstract_params(config), on_device=on_default_device)
    return cls.from_params(config, params, source=os.path.join(path, PARAMS_DIR))

  # --- inference ----------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))

  def logits(self, encoder_input_tokens: Array, decoder_input_tokens: Array) -> Array:
    """Teacher-forced float32 logits `[B, T, V]` (decoder inputs start with 0, T5X style)."""
    enc = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=self.vocab_size)
    dec = check_tokens("decoder_input_tokens", decoder_input_tokens, vocab_size=self.vocab_size)
    if enc.shape[0] != dec.shape[0]:
      raise ValueError(f"encoder_input_tokens and decoder_input_tokens differ in batch size: "
                       f"{enc.shape[0]} vs {dec.shape[0]}")
    return _logits(self.config, self.params, enc, dec)

  # The cached language-model protocol (specdec.drafts.Draft); all three are traceable.

  def encode(self, encoder_input_tokens: Array) -> Array:
    """The encoder's output `[B, S, emb_dim]` (config dtype) for int `[B, S]` inputs."""
    if isinstance(encoder_input_tokens, jax.core.Tracer):
      return encode(self.config, self.params, encoder_input_tokens)
    enc = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=self.vocab_size)
    return _encode(self.config, self.params, enc)

  def start(self, encoder_input_tokens: Array, *, cache_length: int,
            encoded: Array | None = None) -> DecoderCache:
    """An empty decoder cache of `cache_length` positions for these encoder inputs; `encoded`
    (this model's `encode` of them) skips encoding them again."""
    if isinstance(encoder_input_tokens, jax.core.Tracer):
      return start_cache(self.config, self.params, encoder_input_tokens, cache_length, encoded)
    check_positive_int("cache_length", cache_length)
    enc = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=self.vocab_size)
    if encoded is not None:
      expected = enc.shape + (self.config.emb_dim,)
      if tuple(encoded.shape) != expected:
        raise ValueError(f"encoded must be [B, S, emb_dim] = {list(expected)}, got "
                         f"{list(encoded.shape)}")
    return _start(self.config, self.params, enc, cache_length, encoded)

  def extend(self, cache: DecoderCache, tokens: Array) -> tuple[Array, DecoderCache]:
    """Feeds tokens `[B, k]`; returns float32 logits `[B, k, V]` and the advanced cache."""
    if isinstance(tokens, jax.core.Tracer):
      return extend_cache(self.config, self.params, cache, tokens)
    check_room(cache.position, np.shape(tokens)[1], cache.length)  # Eager: positions are known.
    return _extend(self.config, self.params, cache, jnp.asarray(tokens, jnp.int32))

  def rewind(self, cache: DecoderCache, position: Array) -> DecoderCache:
    """Rolls each row back to `position` `[B]`: later entries are never attended again."""
    return cache.rewind(position)


def config_to_dict(config: T5Config) -> dict[str, Any]:
  import dataclasses  # pylint: disable=g-import-not-at-top
  d = dataclasses.asdict(config)
  d["mlp_activations"] = list(d["mlp_activations"])
  return d


def load_config(path: str) -> T5Config:
  if not os.path.isfile(path):
    raise ValueError(f"Model config not found: {path}")
  try:
    with open(path) as f:
      fields = json.load(f)
    if isinstance(fields, dict) and "kind" in fields:
      raise ValueError(f"{path} holds a {fields['kind']!r}, not a T5Model: load it with "
                       f"specdec.load_model")
    return T5Config(**fields)
  except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt model config {path}: {e}") from e
