"""Verification: which draft tokens the target keeps, and the token that follows them.

The paper's Algorithm 1, for one row: draft tokens x_1..x_γ were sampled from q_1..q_γ; the target
gave p_1..p_{γ+1} in one pass. Token x_i is kept while r_i < min(1, p_i(x_i) / q_i(x_i)) with
r_i ~ U[0, 1). At the first rejection n+1 the next token is drawn from norm(max(0, p_{n+1} − q_{n+1}));
if all γ are kept it is drawn from p_{γ+1}. The tokens returned are distributed exactly as
sampling from p one token at a time.

Implementation notes:
* r < p/q is evaluated as r·q < p: no division, so a tiny q(x) cannot overflow, and (since r < 1)
  min(1, ·) is implied.
* q is padded with a zero row γ+1, so "draw from norm(max(0, p_{n+1} − q_{n+1}))" also covers the
  all-accepted case (the residual is then p_{γ+1} itself).
* A residual with no mass cannot occur at a rejection (a rejection needs p(x) < q(x), hence some y
  with p(y) > q(y)), but rounding can produce one when p ≈ q; it falls back to p, never NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib

Array = jax.Array


def verify_row(draft_tokens: Array, draft_probs: Array, target_probs: Array,
               key: Array) -> tuple[Array, Array]:
  """One row: `[γ]` int, `[γ, V]`, `[γ+1, V]` float, a key → (num_accepted, next_token) int32."""
  gamma = draft_tokens.shape[0]
  accept_key, residual_key = jax.random.split(key)
  index = jnp.arange(gamma)
  p_x = target_probs[index, draft_tokens]
  q_x = draft_probs[index, draft_tokens]
  r = jax.random.uniform(accept_key, (gamma,), jnp.float32)
  kept = r * q_x < p_x
  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)
  q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)
  p_next = target_probs[num_accepted]
  residual = jnp.maximum(p_next - q_padded[num_accepted], 0.0)
  residual = jnp.where(jnp.sum(residual) > 0, residual, p_next)
  next_token = sampling_lib.draw(residual_key, residual)
  return num_accepted, next_token


def verify_rows(draft_tokens: Array, draft_probs: Array, target_probs: Array,
                keys: Array) -> tuple[Array, Array]:
  """`verify_row` for every row, each with its own key `[B]`."""
  return jax.vmap(verify_row)(draft_tokens, draft_probs, target_probs, keys)


def verify(draft_tokens: Array, draft_probs: Array, target_probs: Array,
           rng: Array) -> tuple[Array, Array]:
  """Speculative sampling's accept/reject step for a batch.

  Args:
    draft_tokens: int `[B, γ]`, drawn from `draft_probs`.
    draft_probs: float `[B, γ, V]`, the draft's (processed) distributions q_1..q_γ.
    target_probs: float `[B, γ+1, V]`, the target's (processed) distributions p_1..p_{γ+1}.
    rng: A PRNG key; row b uses `fold_in(rng, b)`.

  Returns:
    (num_accepted int32 `[B]` in [0, γ], next_token int32 `[B]`).
  """
  _check_shapes(draft_tokens, draft_probs, target_probs)
  keys = sampling_lib.row_keys(rng, draft_tokens.shape[0])
  return verify_rows(draft_tokens, draft_probs.astype(jnp.float32),
                     target_probs.astype(jnp.float32), keys)


def verify_greedy(draft_tokens: Array, target_logits: Array) -> tuple[Array, Array]:
  """Temperature 0: keep x_i while x_i = argmax p_i; the next token is argmax p_{n+1}.

  draft_tokens int `[B, γ]`, target_logits `[B, γ+1, V]` → (num_accepted `[B]`, next_token `[B]`).
  """
  target_tokens = jnp.argmax(target_logits, axis=-1).astype(jnp.int32)  # [B, γ+1]
  kept = draft_tokens == target_tokens[:, :-1]
  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32), axis=1), axis=1).astype(jnp.int32)
  next_token = jnp.take_along_axis(target_tokens, num_accepted[:, None], axis=1)[:, 0]
  return num_accepted, next_token


def _check_shapes(draft_tokens, draft_probs, target_probs) -> None:
  if draft_tokens.ndim != 2:
    raise ValueError(f"draft_tokens must be [B, gamma], got shape {draft_tokens.shape}")
  batch, gamma = draft_tokens.shape
  if draft_probs.ndim != 3 or draft_probs.shape[:2] != (batch, gamma):
    raise ValueError(f"draft_probs must be [B, gamma, V] = [{batch}, {gamma}, V], "
                     f"got {draft_probs.shape}")
  if target_probs.shape != (batch, gamma + 1, draft_probs.shape[2]):
    raise ValueError(f"target_probs must be [B, gamma + 1, V] = "
                     f"{(batch, gamma + 1, draft_probs.shape[2])}, got {target_probs.shape}")
  if not jnp.issubdtype(draft_tokens.dtype, jnp.integer):
    raise TypeError(f"draft_tokens must be integers, got {draft_tokens.dtype}")
