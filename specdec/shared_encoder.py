"""`SharedEncoderDraft`: a small decoder that reads the target's encoder output.

For an encoder-decoder target the hard part of predicting its next token, understanding the
source, is already done by the target's encoder. A draft that cross-attends to those encoder
states (as distil-whisper's drafts share Whisper's encoder) needs only a decoder of a layer or two,
is cheap per step, and agrees with the target far more often than a draft with its own small
encoder. `speculative_generate` encodes the input once with the target and starts the draft from
that output (`specdec.drafts.TargetEncoderDraft`), so the source is encoded exactly once per call.

The draft has its own token embedding, decoder layers and logits (T5X's parameter names under
`token_embedder/` and `decoder/`); its cross-attention key/value kernels map the target's width
(`encoder_dim`) to its own heads. `SharedEncoderDraft.from_target` can start it from the target's
own decoder weights where the widths agree. It saves and loads like a `T5Model` (config.json +
orbax parameters) and records which target encoder it was made for: a target of another encoder
width or vocabulary is a ValueError naming both sides, and so is a target whose encoder weights
differ from the recorded fingerprint.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from specdec import weights as weights_lib
from specdec.cache import DecoderCache
from specdec.config import T5Config
from specdec.model import (CONFIG_FILE, PARAMS_DIR, check_tree, empty_cache, extend_with,
                           on_default_device)
from specdec.network import Decoder, Embed, teacher_forced_decode
from specdec.validation import check_positive_int, check_tokens

Array = jax.Array
Params = Any

KIND = "shared_encoder_draft"


@dataclasses.dataclass(frozen=True)
class SharedEncoderConfig:
  """Hyperparameters of a decoder-only draft that cross-attends to a target's encoder output.

  Attributes:
    vocab_size: The target's vocabulary size.
    encoder_dim: The target's `emb_dim`: the width of the encoder states it reads.
    emb_dim, num_heads, head_dim, mlp_dim, mlp_activations, dropout_rate, logits_via_embedding,
      dtype, relative_attention_num_buckets, relative_attention_max_distance: as in `T5Config`,
      for the draft's own decoder.
    num_layers: Decoder blocks.
  """

  vocab_size: int
  encoder_dim: int
  emb_dim: int
  num_heads: int
  num_layers: int
  head_dim: int
  mlp_dim: int
  mlp_activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.0
  logits_via_embedding: bool = False
  dtype: str = "float32"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128

  def __post_init__(self):
    for name in ("encoder_dim", "num_layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"SharedEncoderConfig.{name} must be an int, got {value!r}")
      if value <= 0:
        raise ValueError(f"SharedEncoderConfig.{name} must be positive, got {value}")
    try:
      decoder = self.decoder_config
    except (TypeError, ValueError) as e:  # T5Config names its field; name ours.
      raise type(e)(str(e).replace("T5Config.num_decoder_layers", "SharedEncoderConfig.num_layers")
                    .replace("T5Config.", "SharedEncoderConfig.")) from None
    object.__setattr__(self, "mlp_activations", decoder.mlp_activations)
    object.__setattr__(self, "dtype", decoder.dtype)

  @property
  def decoder_config(self) -> T5Config:
    """The draft's decoder as a `T5Config` (its encoder fields are unused)."""
    return T5Config(
        vocab_size=self.vocab_size, emb_dim=self.emb_dim, num_heads=self.num_heads,
        num_encoder_layers=1, num_decoder_layers=self.num_layers, head_dim=self.head_dim,
        mlp_dim=self.mlp_dim, mlp_activations=self.mlp_activations,
        dropout_rate=self.dropout_rate, logits_via_embedding=self.logits_via_embedding,
        dtype=self.dtype, relative_attention_num_buckets=self.relative_attention_num_buckets,
        relative_attention_max_distance=self.relative_attention_max_distance)

  @classmethod
  def for_target(cls, target: T5Config, **overrides: Any) -> "SharedEncoderConfig":
    """A draft config for `target`: one decoder layer of the target's shape unless overridden
    (e.g. `num_layers=2`, `emb_dim=128, head_dim=32, mlp_dim=256`)."""
    if not isinstance(target, T5Config):
      raise TypeError(f"target must be a T5Config, got {type(target).__name__}")
    fields = dict(
        vocab_size=target.vocab_size, encoder_dim=target.emb_dim, emb_dim=target.emb_dim,
        num_heads=target.num_heads, num_layers=1, head_dim=target.head_dim,
        mlp_dim=target.mlp_dim, mlp_activations=target.mlp_activations,
        logits_via_embedding=target.logits_via_embedding, dtype=target.dtype,
        relative_attention_num_buckets=target.relative_attention_num_buckets,
        relative_attention_max_distance=target.relative_attention_max_distance)
    unknown = set(overrides) - set(fields) - {"dropout_rate"}
    if unknown:
      raise TypeError(f"SharedEncoderConfig.for_target: unknown field(s) {sorted(unknown)}")
    return cls(**{**fields, **overrides})

  def replace(self, **overrides: Any) -> "SharedEncoderConfig":
    return dataclasses.replace(self, **overrides)

  @property
  def num_params(self) -> int:
    e, h, d, m, v = self.emb_dim, self.num_heads, self.head_dim, self.mlp_dim, self.vocab_size
    attention = 4 * e * h * d
    cross = 2 * e * h * d + 2 * self.encoder_dim * h * d
    mlp = len(self.mlp_activations) * e * m + m * e
    layers = self.num_layers * (attention + cross + mlp + 3 * e)
    logits = 0 if self.logits_via_embedding else e * v
    return v * e + layers + e + h * self.relative_attention_num_buckets + logits


class SharedEncoderNet(nn.Module):
  """The draft's network: T5X's `token_embedder` and `decoder` without an encoder."""
  config: T5Config  # SharedEncoderConfig.decoder_config.

  def setup(self):
    self.token_embedder = Embed(self.config)
    self.decoder = Decoder(self.config, shared_embedding=self.token_embedder)

  def cross_kv(self, encoded: Array) -> tuple[Array, Array]:
    return self.decoder.cross_kv(encoded)

  def decode(self, tokens: Array, **kwargs) -> tuple[Array, Array, Array]:
    return self.decoder(tokens, **kwargs)

  def __call__(self, encoded: Array, encoder_mask: Array, decoder_input_tokens: Array, *,
               deterministic: bool = True) -> Array:
    """Teacher forcing: target encoder output `[B, S, encoder_dim]`, mask `[B, S]`, decoder
    inputs `[B, T]` → float32 logits `[B, T, vocab]`."""
    return teacher_forced_decode(self.decoder, encoded, encoder_mask, decoder_input_tokens,
                                 deterministic=deterministic)


@functools.lru_cache(maxsize=None)
def network(config: SharedEncoderConfig) -> SharedEncoderNet:
  return SharedEncoderNet(config.decoder_config)


@functools.partial(jax.jit, static_argnums=0)
def _init_params(config: SharedEncoderConfig, rng: Array) -> Params:
  encoded = jnp.ones((1, 2, config.encoder_dim), jnp.float32)
  return network(config).init(rng, encoded, jnp.ones((1, 2), bool),
                              jnp.ones((1, 2), jnp.int32))["params"]


def abstract_params(config: SharedEncoderConfig) -> Params:
  return nn.unbox(jax.eval_shape(_init_params, config, jax.random.PRNGKey(0)))


def teacher_forced_logits(config: SharedEncoderConfig, params: Params, encoded: Array,
                          encoder_mask: Array, decoder_tokens: Array) -> Array:
  return network(config).apply({"params": params}, encoded, encoder_mask, decoder_tokens)


_teacher_forced = jax.jit(teacher_forced_logits, static_argnums=0)


def start_cache(config: SharedEncoderConfig, params: Params, encoder_tokens: Array,
                encoded: Array, length: int) -> DecoderCache:
  return empty_cache(network(config), params, encoded, encoder_tokens > 0, length)


def extend_cache(config: SharedEncoderConfig, params: Params, cache: DecoderCache,
                 tokens: Array) -> tuple[Array, DecoderCache]:
  return extend_with(network(config), params, cache, tokens)


_start = jax.jit(start_cache, static_argnums=(0, 4))
_extend = jax.jit(extend_cache, static_argnums=0)


def encoder_fingerprint(target: Any) -> str | None:
  """A short hash of a `T5Model`'s encoder weights (the token embedding's first row, every
  encoder layer's first query row, the final norm), rounded to bfloat16 so a float32 and a
  bfloat16 copy of the same weights agree. None when the weights are traced (inside `jit`)."""
  params = target.params
  try:
    leaves = [params["token_embedder"]["embedding"][0], params["encoder"]["encoder_norm"]["scale"]]
    leaves += [params["encoder"][name]["attention"]["query"]["kernel"][0]
               for name in sorted(params["encoder"]) if name.startswith("layers_")]
  except (KeyError, TypeError, IndexError):
    return None
  if any(isinstance(x, jax.core.Tracer) for x in leaves):
    return None
  digest = hashlib.sha256()
  for x in jax.device_get(leaves):
    digest.update(np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)).tobytes())
  return digest.hexdigest()[:16]


# Fingerprints by the identity of the target's parameter tree: speculative_generate checks the
# pair on every call, and hashing costs device transfers.
_FINGERPRINTS: dict[int, tuple[Any, str | None]] = {}


def _cached_fingerprint(target: Any) -> str | None:
  key = id(target.params)
  hit = _FINGERPRINTS.get(key)
  if hit is not None and hit[0] is target.params:
    return hit[1]
  fingerprint = encoder_fingerprint(target)
  if fingerprint is not None:
    if len(_FINGERPRINTS) > 64:
      _FINGERPRINTS.clear()
    _FINGERPRINTS[key] = (target.params, fingerprint)
  return fingerprint


@flax.struct.dataclass
class SharedEncoderDraft:
  """A draft decoder over a target's encoder output (a `specdec.drafts.TargetEncoderDraft`).

  Use it as any draft: `speculative_generate(target, draft, ...)`. On its own (e.g. to measure
  its BLEU with `generate`), `draft.bind(target)` is a plain `Draft` that encodes with the target.
  """
  config: SharedEncoderConfig = flax.struct.field(pytree_node=False)
  params: Params
  # `encoder_fingerprint` of the target it was made for; None skips that check.
  target_fingerprint: str | None = flax.struct.field(pytree_node=False, default=None)

  # --- construction -------------------------------------------------------------------------

  @classmethod
  def init(cls, config: SharedEncoderConfig, rng: Array | int = 0, *,
           target_fingerprint: str | None = None) -> "SharedEncoderDraft":
    """Random parameters with T5X's initializers."""
    if not isinstance(config, SharedEncoderConfig):
      raise TypeError(f"config must be a SharedEncoderConfig, got {type(config).__name__}")
    if isinstance(rng, int):
      rng = jax.random.PRNGKey(rng)
    return cls(config=config, params=nn.unbox(_init_params(config, rng)),
               target_fingerprint=target_fingerprint)

  @classmethod
  def from_target(cls, target: Any, config: SharedEncoderConfig | None = None, *,
                  layers: Sequence[int] | None = None, decoder_source: Any = None,
                  rng: Array | int = 0) -> "SharedEncoderDraft":
    """A draft for `target` (a `T5Model`), recording its encoder fingerprint.

    The draft starts from the decoder of `decoder_source` (a `T5Model`; default the target):
    its token embedding, relative-position bias, final norm and logits, and its decoder layer
    `layers[i]` as draft layer i (default: its first `num_layers` layers), copied leaf by leaf
    wherever the shapes agree; everything else is random. From the target itself (same widths)
    that is everything; from a small T5 draft of the draft's width (e.g. the pair's
    `draft_small`), everything but the cross-attention keys/values, which read the target's
    wider encoder. `config` defaults to `SharedEncoderConfig.for_target(target.config)`.
    """
    config = config or SharedEncoderConfig.for_target(target.config)
    draft = cls.init(config, rng, target_fingerprint=encoder_fingerprint(target))
    draft.check_target(target)
    source = target if decoder_source is None else decoder_source
    if source.config.vocab_size != config.vocab_size:
      raise ValueError(f"decoder_source: vocabulary {source.config.vocab_size}, the draft's is "
                       f"{config.vocab_size}")
    available = source.config.num_decoder_layers
    chosen = tuple(range(min(config.num_layers, available))) if layers is None else tuple(layers)
    if layers is not None and (len(chosen) != config.num_layers or not all(
        isinstance(i, int) and 0 <= i < available for i in chosen)):
      raise ValueError(f"layers must name {config.num_layers} decoder layer(s) of the source in "
                       f"[0, {available}), got {chosen}")
    src, dst = source.params, draft.params
    pairs = [(("token_embedder",), ("token_embedder",))]
    pairs += [(("decoder", name), ("decoder", name))
              for name in ("relpos_bias", "decoder_norm", "logits_dense")]
    pairs += [(("decoder", f"layers_{j}"), ("decoder", f"layers_{i}")) for i, j in enumerate(chosen)]
    params, copied_layers = dst, 0  # _set copies along each path; dst is never mutated.
    for src_path, dst_path in pairs:
      src_node, dst_node = _get(src, src_path), _get(dst, dst_path)
      if src_node is None or dst_node is None:
        continue
      merged, copied = _copy_matching(dst_node, src_node)
      params = _set(params, dst_path, merged)
      copied_layers += copied if dst_path[-1].startswith("layers_") else 0
    if layers is not None and not copied_layers:
      raise ValueError("layers: no parameter of those decoder layers has the draft's shape, so "
                       "none can be copied")
    return draft.replace(params=jax.tree_util.tree_map(jnp.asarray, params))

  @classmethod
  def from_params(cls, config: SharedEncoderConfig, params: Params, *,
                  target_fingerprint: str | None = None,
                  source: str = "params") -> "SharedEncoderDraft":
    check_tree(abstract_params(config), params, source=source)
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)
    return cls(config=config, params=params, target_fingerprint=target_fingerprint)

  def save(self, path: str, *, weights: str = "float32") -> None:
    """Writes `path/config.json` (kind, config, target fingerprint) and the parameters (orbax)
    under `path/params`, stored as `weights` ('float32', 'bfloat16', 'int8'; `specdec.weights`)."""
    if weights not in weights_lib.FORMATS:
      raise ValueError(f"weights must be one of {weights_lib.FORMATS}, got {weights!r}")
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    config = dataclasses.asdict(self.config)
    config["mlp_activations"] = list(config["mlp_activations"])
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
      json.dump({"kind": KIND, "config": config, "target_fingerprint": self.target_fingerprint},
                f, indent=2, sort_keys=True)
    weights_lib.save(path, self.params, weights=weights)

  @classmethod
  def load(cls, path: str) -> "SharedEncoderDraft":
    """Reads what `save` wrote; a missing or corrupt file raises ValueError naming it."""
    path = os.path.abspath(path)
    config_path = os.path.join(path, CONFIG_FILE)
    meta = read_meta(config_path)
    if meta.get("kind") != KIND:
      raise ValueError(f"{config_path} is not a shared-encoder draft's config (kind "
                       f"{meta.get('kind')!r}); load it with specdec.load_model")
    try:
      config = SharedEncoderConfig(**meta["config"])
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(f"Corrupt model config {config_path}: {e}") from e
    params = weights_lib.restore(path, abstract_params(config), on_device=on_default_device)
    return cls.from_params(config, params, target_fingerprint=meta.get("target_fingerprint"),
                           source=os.path.join(path, PARAMS_DIR))

  # --- as a draft ---------------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self.config.vocab_size

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(self.params))

  def check_target(self, target: Any) -> None:
    """ValueError naming both sides unless `target` has the encoder this draft reads."""
    config = getattr(target, "config", None)
    if not isinstance(config, T5Config):
      raise TypeError(f"a SharedEncoderDraft reads a T5Model's encoder; the target is a "
                      f"{type(target).__name__}")
    if config.emb_dim != self.config.encoder_dim:
      raise ValueError(f"the draft reads encoder states of width {self.config.encoder_dim} "
                       f"(draft.config.encoder_dim), the target's are {config.emb_dim} "
                       f"(target.config.emb_dim)")
    if config.vocab_size != self.config.vocab_size:
      raise ValueError(f"draft and target vocabularies differ: draft.vocab_size="
                       f"{self.config.vocab_size}, target.vocab_size={config.vocab_size}")
    if self.target_fingerprint is not None:
      theirs = _cached_fingerprint(target)
      if theirs is not None and theirs != self.target_fingerprint:
        raise ValueError(
            f"the draft was made for a target encoder with fingerprint {self.target_fingerprint}"
            f" (draft.target_fingerprint); this target's is {theirs}: same shapes, other weights,"
            f" so its proposals would rarely be accepted. Use the target it was trained for, or "
            f"draft.replace(target_fingerprint=None) to use it anyway")

  def start_from_encoded(self, encoder_input_tokens: Array, encoded: Array, *,
                         cache_length: int) -> DecoderCache:
    """The draft's cache for inputs `[B, S]` and the target's encoder output `[B, S, emb]`."""
    if isinstance(encoder_input_tokens, jax.core.Tracer):
      return start_cache(self.config, self.params, encoder_input_tokens, encoded, cache_length)
    check_positive_int("cache_length", cache_length)
    enc = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=self.vocab_size)
    expected = enc.shape + (self.config.encoder_dim,)
    if tuple(encoded.shape) != expected:
      raise ValueError(f"encoded must be [B, S, encoder_dim] = {list(expected)}, got "
                       f"{list(encoded.shape)}")
    return _start(self.config, self.params, enc, encoded, cache_length)

  def start(self, encoder_input_tokens: Array, *, cache_length: int) -> DecoderCache:
    raise TypeError("a SharedEncoderDraft starts from the target's encoder output: use it "
                    "through speculative_generate(target, draft, ...), or draft.bind(target) for "
                    "a draft that encodes with the target itself")

  def extend(self, cache: DecoderCache, tokens: Array) -> tuple[Array, DecoderCache]:
    """Feeds tokens `[B, k]`; returns float32 logits `[B, k, V]` and the advanced cache."""
    if isinstance(tokens, jax.core.Tracer):
      return extend_cache(self.config, self.params, cache, tokens)
    return _extend(self.config, self.params, cache, jnp.asarray(tokens, jnp.int32))

  def rewind(self, cache: DecoderCache, position: Array) -> DecoderCache:
    return cache.rewind(position)

  def logits(self, target: Any, encoder_input_tokens: Array,
             decoder_input_tokens: Array) -> Array:
    """Teacher-forced float32 logits `[B, T, V]` over `target`'s encoding of the inputs."""
    self.check_target(target)
    enc = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=self.vocab_size)
    dec = check_tokens("decoder_input_tokens", decoder_input_tokens, vocab_size=self.vocab_size)
    if enc.shape[0] != dec.shape[0]:
      raise ValueError(f"encoder_input_tokens and decoder_input_tokens differ in batch size: "
                       f"{enc.shape[0]} vs {dec.shape[0]}")
    return _teacher_forced(self.config, self.params, target.encode(enc), enc > 0, dec)

  def bind(self, target: Any) -> "BoundDraft":
    """This draft with `target`'s encoder: a plain `Draft` (e.g. for `generate`)."""
    self.check_target(target)
    return BoundDraft(draft=self, target=target)


@flax.struct.dataclass
class BoundDraft:
  """A `SharedEncoderDraft` with the target whose encoder it reads: a self-contained `Draft`."""
  draft: SharedEncoderDraft
  target: Any  # A T5Model.

  @property
  def vocab_size(self) -> int:
    return self.draft.vocab_size

  def start(self, encoder_input_tokens: Array, *, cache_length: int) -> DecoderCache:
    encoded = self.target.encode(encoder_input_tokens)
    return self.draft.start_from_encoded(encoder_input_tokens, encoded,
                                         cache_length=cache_length)

  def extend(self, cache: DecoderCache, tokens: Array) -> tuple[Array, DecoderCache]:
    return self.draft.extend(cache, tokens)

  def rewind(self, cache: DecoderCache, position: Array) -> DecoderCache:
    return cache.rewind(position)


def _get(tree: Any, path: Sequence[str]) -> Any:
  for key in path:
    if not hasattr(tree, "get") or key not in tree:
      return None
    tree = tree[key]
  return tree


def _set(tree: dict, path: Sequence[str], value: Any) -> dict:
  out = dict(tree)
  out[path[0]] = value if len(path) == 1 else _set(tree[path[0]], path[1:], value)
  return out


def _copy_matching(dst: Any, src: Any) -> tuple[Any, int]:
  """`dst` with each leaf replaced by `src`'s at the same path where the shapes agree, and the
  number of leaves copied."""
  if not hasattr(dst, "items"):
    same = src is not None and not hasattr(src, "items") and np.shape(src) == np.shape(dst)
    return (src, 1) if same else (dst, 0)
  out, total = {}, 0
  for key, value in dst.items():
    out[key], n = _copy_matching(value, src.get(key) if hasattr(src, "get") else None)
    total += n
  return out, total


def read_meta(path: str) -> dict[str, Any]:
  """The JSON of a checkpoint's config.json; ValueError naming the file if missing or corrupt."""
  if not os.path.isfile(path):
    raise ValueError(f"Model config not found: {path}")
  try:
    with open(path) as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"Corrupt model config {path}: {e}") from e
  if not isinstance(meta, dict):
    raise ValueError(f"Corrupt model config {path}: expected a JSON object")
  return meta
