"""A decoder cache made for speculation: per-row positions, block writes, rollback by position.

T5X's cache feeds one token per step, adds by one-hot, and keeps one index for the whole batch.
Speculative decoding needs more: a target scores a block of gamma + 1 tokens in one pass, rows
accept different numbers of them, and rejected entries must disappear. Here:

* every array is pre-allocated, so shapes are static under `jit`;
* `position[b]` is the number of decoder tokens row b has consumed; a block of k tokens is
  written at `position[b] .. position[b] + k - 1` with replace semantics;
* a query at position t attends to entries 0..t only, so *rolling back is lowering `position`*:
  entries past it are never attended again, and the next write overwrites them.

Capacity contract: a row's writes must end within the cache length (`dynamic_update_slice`
clamps rather than fails); decoders allocate the slack they need (see `decoding`, `speculative`).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


def write_rows(buffer: Array, block: Array, start: Array) -> Array:
  """Writes block `[B, k, ...]` into buffer `[B, L, ...]` at each row's own `start` `[B]`."""
  write = lambda row, update, s: jax.lax.dynamic_update_slice_in_dim(row, update, s, axis=0)
  return jax.vmap(write)(buffer, block.astype(buffer.dtype), start)


def read_rows(buffer: Array, start: Array, length: int) -> Array:
  """Reads `[B, length, ...]` from buffer `[B, L, ...]` starting at each row's `start` `[B]`."""
  read = lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, length, axis=0)
  return jax.vmap(read)(buffer, start)


@flax.struct.dataclass
class DecoderCache:
  """The decoding state of a T5 for one batch of encoder inputs.

  Shapes: B batch, L cache length, S encoder length, N decoder layers, H heads, D head_dim.
  """
  self_keys: Array      # [N, B, L, H, D] config dtype; self-attention keys, by position.
  self_values: Array    # [N, B, L, H, D] config dtype.
  cross_keys: Array     # [N, B, S, H, D] config dtype; computed once from the encoder output.
  cross_values: Array   # [N, B, S, H, D] config dtype.
  encoder_mask: Array   # [B, S] bool; True where the encoder input is a real token.
  position: Array       # [B] int32; decoder tokens consumed per row (the next write offset).

  @property
  def length(self) -> int:
    return self.self_keys.shape[2]

  def rewind(self, position: Array) -> "DecoderCache":
    """Rolls each row back (or forward over already written entries) to `position` `[B]`."""
    return self.replace(position=position.astype(jnp.int32))
