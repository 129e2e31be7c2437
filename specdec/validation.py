"""Argument checks shared by the public entry points: clear Python errors before any tracing."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_tokens(name: str, tokens: Any, *, vocab_size: int) -> jax.Array:
  """Checks an int `[B, T]` token array and returns it as int32.

  Raises TypeError for a non-integer dtype, ValueError for a rank other than 2, an empty axis, or
  (when the values are concrete) ids outside [0, vocab_size).
  """
  if isinstance(tokens, (list, tuple)):
    tokens = np.asarray(tokens)
  if not hasattr(tokens, "shape") or not hasattr(tokens, "dtype"):
    raise TypeError(f"{name} must be an integer array, got {type(tokens).__name__}")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise TypeError(f"{name} must have an integer dtype, got {tokens.dtype}")
  if tokens.ndim != 2:
    raise ValueError(f"{name} must have rank 2 [batch, length], got shape {tuple(tokens.shape)}")
  if tokens.shape[0] == 0 or tokens.shape[1] == 0:
    raise ValueError(f"{name} must not be empty, got shape {tuple(tokens.shape)}")
  # A multi-host global array cannot be read here (other processes hold rows of it); each
  # process checks its own rows before building it (`partitioning.shard_batch`).
  if not isinstance(tokens, jax.core.Tracer) and getattr(tokens, "is_fully_addressable", True):
    values = np.asarray(tokens)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= vocab_size:
      raise ValueError(f"{name} holds ids outside [0, {vocab_size}): min {low}, max {high}")
  return jnp.asarray(tokens, jnp.int32)


def check_positive_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {value!r}")
  if value <= 0:
    raise ValueError(f"{name} must be >= 1, got {value}")
  return int(value)


@functools.lru_cache(maxsize=None)
def _unused_key() -> jax.Array:
  """The key greedy decoding passes along (never drawn from); made once, not per call.

  Made concrete even when the first call is traced (`generate` inside a user's `jit`): a cached
  tracer would escape its trace and break every later call.
  """
  with jax.ensure_compile_time_eval():
    return jax.random.PRNGKey(0)


def check_rng(rng: Any, *, needed: bool) -> jax.Array:
  """A PRNG key (or an int seed); required when sampling, optional (and unused) when greedy."""
  if rng is None:
    if needed:
      raise ValueError("rng must be given when temperature > 0 (sampling)")
    return _unused_key()
  if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
    return jax.random.PRNGKey(int(rng))
  if not hasattr(rng, "shape"):
    raise TypeError(f"rng must be a jax PRNG key or an int seed, got {type(rng).__name__}")
  return rng
