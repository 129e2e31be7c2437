"""Verification: which draft tokens the target keeps, and the token that follows them.

`speculative_generate` runs one rule, a small frozen object chosen once from its arguments
(`choose_rule`): `GreedyVerification` at temperature 0, else `TokenVerification` (the paper's
rule; `lenience` is its field) or `BlockVerification`. Each has one method,
`rule.verify(proposal, target_logits, keys, sampling=...)`, and the batched functions below
(`verify`, `verify_block`, `verify_greedy`) are usable on their own.

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
* Fewer proposals (adaptive γ, `specdec.proposal`): a row that proposed k < γ tokens has q zeroed
  past k and x_{k+1}.. never kept, so the residual after x_k is p_{k+1} itself.

Block verification (Sun, Mendlovic, Leviathan et al., "Block Verification Accelerates
Speculative Decoding", ICLR 2025, Algorithm 2; `verify_block`): a_0 = 1,
a_i = min(1, a_{i-1} p_i(x_i) / q_i(x_i)); h_i = Z_i / (Z_i + 1 − a_i) for i < γ with
Z_i = Σ_x max(a_i p_{i+1}(x) − q_{i+1}(x), 0) (1 when the denominator is 0), h_γ = a_γ. The kept
length τ is the LARGEST i with η_i < h_i (independent η_i ~ U[0, 1); the scan does not stop at
a failure), and the next token is drawn from norm(max(a_τ p_{τ+1} − q_{τ+1}, 0)), p_{γ+1} when
τ = γ. Exact, and never fewer tokens kept in expectation than the token rule (two tokens, p =
(1/3, 2/3), q = (2/3, 1/3), γ = 2: 11/9 against 10/9). At temperature 0 (one-hot p, q) a_i is 1
while x agrees with argmax p and 0 after, h_i = a_i, and it reduces to the greedy rule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol

import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib
from specdec.proposal import Proposal
from specdec.sampling import Sampling

Array = jax.Array


def verify_row(draft_tokens: Array, draft_probs: Array, target_probs: Array, key: Array, *,
               num_proposed: Array | int | None = None,
               lenience: float = 1.0) -> tuple[Array, Array]:
  """One row: `[γ]` int, `[γ, V]`, `[γ+1, V]` float, a key → (num_accepted, next_token) int32.

  num_proposed: k ≤ γ, the draft tokens proposed (default γ); q past k is ignored, so the residual
  after x_k is p_{k+1} itself. lenience: l in (0, 1]: accept while r·l·q < p, residual
  norm(max(0, p − l·q)) (see `TokenVerification`; 1 = exact).
  """
  gamma = draft_tokens.shape[0]
  accept_key, residual_key = jax.random.split(key)
  index = jnp.arange(gamma)
  proposed = index < (gamma if num_proposed is None else num_proposed)
  draft_probs = jnp.where(proposed[:, None], draft_probs, 0.0)
  if lenience != 1.0:
    draft_probs = lenience * draft_probs
  p_x = target_probs[index, draft_tokens]
  q_x = draft_probs[index, draft_tokens]
  r = jax.random.uniform(accept_key, (gamma,), jnp.float32)
  kept = (r * q_x < p_x) & proposed
  num_accepted = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)
  q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)
  p_next = target_probs[num_accepted]
  residual = jnp.maximum(p_next - q_padded[num_accepted], 0.0)
  residual = jnp.where(jnp.sum(residual) > 0, residual, p_next)
  next_token = sampling_lib.draw(residual_key, residual)
  return num_accepted, next_token


def verify_rows(draft_tokens: Array, draft_probs: Array, target_probs: Array,
                keys: Array, *, num_proposed: Array | None = None,
                lenience: float = 1.0) -> tuple[Array, Array]:
  """`verify_row` for every row, each with its own key `[B]` (and k `[B]`, default γ)."""
  if num_proposed is None:
    num_proposed = jnp.full(draft_tokens.shape[:1], draft_tokens.shape[1], jnp.int32)
  row = functools.partial(verify_row, lenience=lenience)
  return jax.vmap(lambda x, q, p, key, k: row(x, q, p, key, num_proposed=k))(
      draft_tokens, draft_probs, target_probs, keys, num_proposed)


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


def verify_greedy(draft_tokens: Array, target_logits: Array, *,
                  num_proposed: Array | None = None) -> tuple[Array, Array]:
  """Temperature 0: keep x_i while x_i = argmax p_i; the next token is argmax p_{n+1}.

  draft_tokens int `[B, γ]`, target_logits `[B, γ+1, V]` → (num_accepted `[B]`, next_token `[B]`).
  num_proposed: int `[B]`, the tokens each row proposed (default γ; x past it are never kept).
  """
  target_tokens = sampling_lib.argmax(target_logits)  # [B, γ+1]
  kept = draft_tokens == target_tokens[:, :-1]
  if num_proposed is not None:
    kept &= jnp.arange(draft_tokens.shape[1])[None, :] < num_proposed[:, None]
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


# --- block verification (Sun, Mendlovic, Leviathan et al., ICLR 2025, Algorithm 2) -------------


def verify_block_row(draft_tokens: Array, draft_probs: Array, target_probs: Array, key: Array, *,
                     num_proposed: Array | int | None = None) -> tuple[Array, Array]:
  """Block verification of one row: `[γ]` int, `[γ, V]`, `[γ+1, V]` float, a key → (τ, next
  token) int32. Arguments as in `verify_row`.

  With k proposed tokens: a_0 = 1, a_i = min(1, a_{i-1} p_i(x_i) / q_i(x_i)); for i < k,
  h_i = Z_i / (Z_i + 1 − a_i) with Z_i = Σ_x max(a_i p_{i+1}(x) − q_{i+1}(x), 0) (h_i = 1 when
  the denominator is 0), h_k = a_k. τ is the largest i with η_i < h_i for independent
  η_i ~ U[0, 1) (0 if none); the next token is drawn from norm(max(a_τ p_{τ+1} − q_{τ+1}, 0)),
  which is p_{k+1} itself when τ = k (q past k is 0).
  """
  gamma = draft_tokens.shape[0]
  accept_key, residual_key = jax.random.split(key)
  index = jnp.arange(gamma)
  k = gamma if num_proposed is None else num_proposed
  proposed = index < k
  draft_probs = jnp.where(proposed[:, None], draft_probs, 0.0)
  p_x = target_probs[index, draft_tokens]
  q_x = draft_probs[index, draft_tokens]
  a, weights = jnp.ones(()), []
  for i in range(gamma):  # γ is static and small: a_i = min(1, a_{i-1} p/q), without overflow.
    scaled = a * p_x[i]
    a = jnp.where(scaled >= q_x[i], 1.0, scaled / jnp.where(q_x[i] > 0, q_x[i], 1.0))
    weights.append(a)
  a = jnp.stack(weights)  # [γ]: a_1..a_γ.
  q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)
  z = jnp.sum(jnp.maximum(a[:, None] * target_probs[1:] - q_padded[1:], 0.0), axis=1)  # Z_1..Z_γ
  denominator = z + (1.0 - a)
  h = jnp.where(denominator > 0, z / jnp.where(denominator > 0, denominator, 1.0), 1.0)
  position = index + 1  # i = 1..γ.
  h = jnp.where(position < k, h, jnp.where(position == k, a, 0.0))
  eta = jax.random.uniform(accept_key, (gamma,), jnp.float32)
  tau = jnp.max(jnp.where(eta < h, position, 0)).astype(jnp.int32)
  a_tau = jnp.concatenate([jnp.ones((1,)), a])[tau]
  p_next = target_probs[tau]
  residual = jnp.maximum(a_tau * p_next - q_padded[tau], 0.0)
  residual = jnp.where(jnp.sum(residual) > 0, residual, p_next)
  return tau, sampling_lib.draw(residual_key, residual)


def verify_block_rows(draft_tokens: Array, draft_probs: Array, target_probs: Array, keys: Array,
                      *, num_proposed: Array | None = None) -> tuple[Array, Array]:
  """`verify_block_row` for every row, each with its own key `[B]` (and k `[B]`, default γ)."""
  if num_proposed is None:
    num_proposed = jnp.full(draft_tokens.shape[:1], draft_tokens.shape[1], jnp.int32)
  return jax.vmap(lambda x, q, p, key, k: verify_block_row(x, q, p, key, num_proposed=k))(
      draft_tokens, draft_probs, target_probs, keys, num_proposed)


def verify_block(draft_tokens: Array, draft_probs: Array, target_probs: Array, rng: Array, *,
                 num_proposed: Array | None = None) -> tuple[Array, Array]:
  """Block verification for a batch: the γ draft tokens are verified jointly.

  Exact like `verify` (the output is distributed as sampling from p), and never keeps fewer
  tokens in expectation (optimal among rules that see p and q only along the draft's path).
  Arguments and returns as in `verify`; num_proposed: int `[B]`, the tokens each row proposed
  (default γ). At temperature 0 (one-hot p and q) it reduces to `verify_greedy`.
  """
  _check_shapes(draft_tokens, draft_probs, target_probs)
  keys = sampling_lib.row_keys(rng, draft_tokens.shape[0])
  return verify_block_rows(draft_tokens, draft_probs.astype(jnp.float32),
                           target_probs.astype(jnp.float32), keys, num_proposed=num_proposed)


# --- the rules speculative_generate chooses between ---------------------------------------------


class VerificationRule(Protocol):
  """One verification rule: a frozen, hashable object (a static argument of the jitted loop)."""

  def verify(self, proposal: Proposal, target_logits: Array, keys: Array | None, *,
             sampling: Sampling) -> tuple[Array, Array]:
    """A `Proposal`, the target's logits `[B, γ+1, V]` and per-row keys `[B]` (None when greedy)
    → (num_accepted `[B]`, next_token `[B]`) int32."""


@dataclasses.dataclass(frozen=True)
class GreedyVerification:
  """Temperature 0 (`verify_greedy`): what every rule reduces to there."""

  def verify(self, proposal, target_logits, keys, *, sampling):
    del keys, sampling
    return verify_greedy(proposal.tokens, target_logits, num_proposed=proposal.num_proposed)


@dataclasses.dataclass(frozen=True)
class TokenVerification:
  """The paper's rule (`verify`): x_i is kept while r_i < min(1, p_i(x_i) / (l·q_i(x_i))).

  lenience: l in (0, 1]. l = 1 (the default) is exact. l < 1 is the paper's lenience (its
  Appendix A.5, Table 5): draft tokens are accepted more often, and after a rejection the next
  token is drawn from norm(max(0, p − l·q)). It CHANGES THE OUTPUT DISTRIBUTION: each token is
  then distributed as min(q, p/l) + (1 − β_l)·norm(max(0, p − l·q)), β_l = Σ_x min(q(x), p(x)/l),
  not as p (l → 0 gives the draft's q).
  """
  lenience: float = 1.0

  def __post_init__(self):
    value = self.lenience
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(f"lenience must be a number, got {value!r}")
    if not 0.0 < value <= 1.0:  # Also rejects NaN.
      raise ValueError(f"lenience must be in (0, 1], got {value}")
    object.__setattr__(self, "lenience", float(value))

  def verify(self, proposal, target_logits, keys, *, sampling):
    return verify_rows(proposal.tokens, proposal.probs, sampling.probs(target_logits), keys,
                       num_proposed=proposal.num_proposed, lenience=self.lenience)


@dataclasses.dataclass(frozen=True)
class BlockVerification:
  """Block verification (`verify_block`): exact, and never fewer tokens kept in expectation."""

  def verify(self, proposal, target_logits, keys, *, sampling):
    return verify_block_rows(proposal.tokens, proposal.probs, sampling.probs(target_logits), keys,
                             num_proposed=proposal.num_proposed)


VERIFICATIONS = ("token", "block")


def choose_rule(verification: str, *, lenience: float, sampling: Sampling) -> VerificationRule:
  """The rule `speculative_generate` runs, from its arguments (checked here, before tracing)."""
  if not isinstance(verification, str):
    raise TypeError(f"verification must be a string, one of {VERIFICATIONS}, got "
                    f"{verification!r}")
  if verification not in VERIFICATIONS:
    raise ValueError(f"verification must be one of {VERIFICATIONS}, got {verification!r}")
  token_rule = TokenVerification(lenience=lenience)  # Checks lenience.
  if token_rule.lenience != 1.0:
    if verification != "token":
      raise ValueError(f"lenience={lenience} is a setting of verification='token'; "
                       f"verification={verification!r} is exact and has none")
    if sampling.greedy:
      raise ValueError(f"lenience={lenience} needs temperature > 0: at temperature 0 p and q "
                       "are one-hot and any lenience accepts exactly what the greedy rule does")
  if sampling.greedy:
    return GreedyVerification()
  return token_rule if verification == "token" else BlockVerification()
