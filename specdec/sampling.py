"""Sampling strategies: temperature, top-k and top-p turn logits into the distribution sampled.

Both `generate` and `speculative_generate` use these functions, and speculative decoding applies
the *same* processing to the target's p and the draft's q, so what it samples exactly is the
processed target distribution. Temperature 0 means greedy (argmax) decoding.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How next tokens are chosen; validated on construction (before anything is traced).

  temperature: 0 for greedy decoding, > 0 to sample from softmax(logits / temperature).
  top_k: keep only the k most likely tokens (0 disables).
  top_p: keep the smallest set of most likely tokens whose probability reaches top_p (1 disables).
  """
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    for name in ("temperature", "top_p"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(self.top_k, bool) or not isinstance(self.top_k, int):
      raise TypeError(f"top_k must be an int, got {self.top_k!r}")
    if not self.temperature >= 0:  # Also rejects NaN.
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    object.__setattr__(self, "temperature", float(self.temperature))
    object.__setattr__(self, "top_p", float(self.top_p))

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0

  def probs(self, logits: Array) -> Array:
    """float logits `[..., V]` → float32 probabilities `[..., V]` (not for greedy decoding)."""
    return logits_to_probs(logits, temperature=self.temperature, top_k=self.top_k,
                           top_p=self.top_p)


def logits_to_probs(logits: Array, *, temperature: float, top_k: int = 0,
                    top_p: float = 1.0) -> Array:
  """Temperature, then top-k, then top-p; returns float32 probabilities `[..., V]` summing to 1.

  Ties at the top-k / top-p boundary are all kept, so the result does not depend on sort order.
  """
  if temperature <= 0:
    raise ValueError("logits_to_probs needs temperature > 0; temperature 0 is argmax")
  logits = logits.astype(jnp.float32) / temperature
  if top_k and top_k < logits.shape[-1]:
    kth_largest = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits >= kth_largest, logits, -jnp.inf)
  probs = jax.nn.softmax(logits, axis=-1)
  if top_p < 1.0:
    sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    # The smallest probability still kept: tokens are kept while the mass before them < top_p.
    kept = jnp.where(mass_before < top_p, sorted_probs, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    probs = jnp.where(probs >= threshold, probs, 0.0)
    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
  return probs


_CHUNK = 64  # argmax's first stage reduces chunks of this many tokens.


def _first_max(x: Array) -> Array:
  """int32 index of the first maximum over the last axis, NaN counting as the maximum (as in
  `jnp.argmax`), from two vectorised reductions (a max, then a min of the indices that reach it)
  instead of XLA's variadic (value, index) reduce, which the CPU backend does not vectorise."""
  nan = jnp.isnan(x)  # XLA's CPU max does not propagate NaN: look for them apart.
  top = jnp.max(x, axis=-1, keepdims=True)
  hit = jnp.where(jnp.any(nan, axis=-1, keepdims=True), nan, x == top)
  index = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  return jnp.min(jnp.where(hit, index, x.shape[-1]), axis=-1)


def argmax(logits: Array) -> Array:
  """int32 `[...]` index of the largest logit over the last axis of `[..., V]`: exactly
  `jnp.argmax(logits, axis=-1)` (the first index on ties; the first NaN if there is one).

  The greedy choice of every loop here. On the CPU `jnp.argmax` over 4096 tokens costs ~12 µs a
  row, a real share of a small draft's step; this costs ~2 µs: the row is cut into chunks of 64,
  the first chunk holding the row's maximum is found from the chunks' maxima, and then the first
  maximum inside it (each by `_first_max`).
  """
  vocab = logits.shape[-1]
  if vocab % _CHUNK or vocab < 4 * _CHUNK:
    return _first_max(logits)
  chunks = logits.reshape(logits.shape[:-1] + (vocab // _CHUNK, _CHUNK))
  # The first chunk with a NaN if there is one, else the first holding the maximum.
  tops = jnp.where(jnp.any(jnp.isnan(chunks), axis=-1), jnp.nan, jnp.max(chunks, axis=-1))
  chunk = _first_max(tops)
  inside = jnp.take_along_axis(chunks, chunk[..., None, None], axis=-2)[..., 0, :]
  return chunk * _CHUNK + _first_max(inside)


def draw(key: Array, weights: Array) -> Array:
  """One token from `weights` float `[V]` (≥ 0, not necessarily normalised) → int32 scalar.

  Inverse-CDF sampling: token j is chosen when cdf[j-1] ≤ u·cdf[V-1] < cdf[j] for one uniform u,
  so a zero-weight token (cdf[j] = cdf[j-1]) is never chosen, nor one after the last token with
  weight. One uniform and a cumulative sum replace the V uniforms and 2V logarithms of the
  Gumbel-max trick (`jax.random.categorical`): 4 µs against 203 µs per draw over 4096 tokens on
  this project's CPU (`scripts/bench_sampling.py`). Both are exact up to float32 rounding (here
  of the cumulative sum, ~1e-7 absolute per token).
  """
  cdf = jnp.cumsum(weights.astype(jnp.float32))
  u = jax.random.uniform(key, (), jnp.float32) * cdf[-1]
  # u < 1 gives u·cdf[-1] < cdf[-1] under round-to-nearest, so the index is a token with weight.
  return jnp.sum(cdf <= u).astype(jnp.int32)


def sample_rows(keys: Array, probs: Array) -> Array:
  """One draw per row: keys `[B]` (typed PRNG keys or uint32 `[B, 2]`), probs `[B, V]` → int32 `[B]`."""
  return jax.vmap(draw)(keys, probs)


def row_keys(rng: Array, batch_size: int) -> Array:
  """Per-row keys that do not depend on the batch size: row b's key is `fold_in(rng, b)`."""
  return jax.vmap(lambda b: jax.random.fold_in(rng, b))(jnp.arange(batch_size))


def step_keys(keys: Array, step: Array) -> Array:
  """`fold_in(key, step)` for every row key `[B]`."""
  return jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)
