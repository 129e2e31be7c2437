"""A decoder cache made for speculation: per-row positions, block writes, rollback by position.

T5X's cache feeds one token per step, adds by one-hot, and keeps one index for the whole batch.
Speculative decoding needs more: a target scores a block of gamma + 1 tokens in one pass, rows
accept different numbers of them, and rejected entries must disappear. Here:

* every array is pre-allocated, so shapes are static under `jit`;
* `position[b]` is the number of decoder tokens row b has consumed; a block of k tokens is
  written at `position[b] .. position[b] + k - 1` with replace semantics;
* a query at position t attends to entries 0..t only, so *rolling back is lowering `position`*:
  entries past it are never attended again, and the next write overwrites them.

Capacity: a row's block must end within the cache length. `dynamic_update_slice` would clamp
such a write (shifting it onto earlier, valid entries), so nothing here relies on it:

* `write_rows` / `read_rows` raise ValueError for a block longer than the buffer (a static
  shape), and, when the start positions are concrete (eager calls), for any row that would run
  past the end;
* under `jit` the positions are traced and checking them would cost a host round trip per call,
  so there an out-of-range write is made impossible by construction: each decoder sizes its
  caches from static bounds on its positions (`generate`: `max_decode_len`, one token per step;
  `speculative_generate`: `max_decode_len + 2 * (gamma + 1)`, see there), and
  `tests/test_speculative.py::test_writes_stay_inside_the_caches` records every write of the
  loop at extreme settings to check that bound.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def check_room(start: Array, length: int, capacity: int, *, what: str = "write") -> None:
  """Raises ValueError unless `length` entries from every row's `start` `[B]` fit in `capacity`.

  The block length is static and always checked; `start` only when it is concrete (a traced
  `start` cannot be inspected without a host round trip: see the module docstring).
  """
  if length > capacity:
    raise ValueError(f"cannot {what} a block of {length} entries in a cache of length {capacity}")
  if isinstance(start, jax.core.Tracer):
    return
  start = np.asarray(start)
  bad = np.flatnonzero((start < 0) | (start + length > capacity))
  if bad.size:
    row = int(bad[0])
    raise ValueError(f"start: row {row} would {what} entries {int(start[row])}.."
                     f"{int(start[row]) + length - 1} of a cache of length {capacity} "
                     f"({bad.size} row(s) out of range)")


def write_rows(buffer: Array, block: Array, start: Array, *, axis: int = 1) -> Array:
  """Writes block `[B, k, ...]` into buffer `[B, L, ...]` at each row's own `start` `[B]`;
  with `axis` a ≥ 1, along that axis instead (block `[B, ..., k, ...]`, k at axis a too).

  Raises ValueError for a block that does not fit (see `check_room`); never clamps.
  """
  check_room(start, block.shape[axis], buffer.shape[axis], what="write")
  write = lambda row, update, s: jax.lax.dynamic_update_slice_in_dim(row, update, s,
                                                                     axis=axis - 1)
  return jax.vmap(write)(buffer, block.astype(buffer.dtype), start)


def read_rows(buffer: Array, start: Array, length: int) -> Array:
  """Reads `[B, length, ...]` from buffer `[B, L, ...]` starting at each row's `start` `[B]`.

  Raises ValueError for a read that does not fit (see `check_room`); never clamps.
  """
  check_room(start, length, buffer.shape[1], what="read")
  read = lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, length, axis=0)
  return jax.vmap(read)(buffer, start)


def self_cache_shapes(config, *, batch: int, length: int
                      ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """The shapes of a `DecoderCache`'s self-attention keys `[N, B, H, D, L]` and values `[N, B,
  H, L, D]` for a config with `num_decoder_layers`, `num_heads` and `head_dim`."""
  n, h, d = config.num_decoder_layers, config.num_heads, config.head_dim
  return (n, batch, h, d, length), (n, batch, h, length, d)


@flax.struct.dataclass
class DecoderCache:
  """The decoding state of a T5 for one batch of encoder inputs.

  Shapes: B batch, L cache length, S encoder length, N decoder layers, H heads, D head_dim.
  """
  self_keys: Array      # [N, B, H, D, L] config dtype; self-attention keys, by position.
  self_values: Array    # [N, B, H, L, D] config dtype.
  cross_keys: Array     # [N, B, H, D, S] config dtype; computed once from the encoder output.
  cross_values: Array   # [N, B, H, S, D] config dtype.
  encoder_mask: Array   # [B, S] bool; True where the encoder input is a real token.
  position: Array       # [B] int32; decoder tokens consumed per row (the next write offset).

  @property
  def length(self) -> int:
    return self.self_values.shape[3]

  def rewind(self, position: Array) -> "DecoderCache":
    """Rolls each row back (or forward over already written entries) to `position` `[B]`."""
    return self.replace(position=position.astype(jnp.int32))
