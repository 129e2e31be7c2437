"""Step 1 of Algorithm 1: the draft catches up and proposes up to γ tokens at each row's offset.

`propose` returns a `Proposal`: tokens x_1..x_k, their distributions q_1..q_k (as the tokens were
sampled, after temperature/top-k/top-p) and k per row. Without a stopping rule k = γ and the
draft runs as a `lax.scan` of γ − 1 steps after its catch-up pass.

Adaptive γ (`ConfidenceStop`): γ becomes the maximum. A row stops proposing after a token its
draft gave probability below the threshold (the probability it was sampled with; at temperature
0 the softmax of the draft's logits, so its maximum). The draft's steps then run in a
`lax.while_loop` that ends as soon as no row is still proposing, so a stopped batch skips the
remaining draft passes (rows that stopped early still take part in the batched passes of the
others; their extra tokens are never proposed).

Why stopping keeps decoding exact: whether x_{i+1} is proposed depends only on the draft's own
x_1..x_i and q_1..q_i. Picture the same draft continuing past its stop with q_j = p_j (the
target's own conditionals): a legitimate, if unbuildable, draft, for which both rules are exact.
The token rule would keep those extra tokens surely; the block rule's h_i would be 0 from the
stop k to γ − 1 and h_γ = a_k. Either way it outputs what the stopped row outputs (verified with
k proposals, p_{k+1} itself as the residual after x_k) followed by tokens drawn from p, so both
have the same law. `specdec.testing.iteration_law` checks this by enumeration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib
from specdec.cache import read_rows
from specdec.sampling import Sampling

Array = jax.Array


@flax.struct.dataclass
class Proposal:
  """What the draft proposed this iteration; verification reads it."""
  tokens: Array        # [B, γ] int32; x_1..x_k, 0 past k.
  probs: Array | None  # [B, γ, V] float32; q_1..q_k, 0 past k (None when greedy).
  num_proposed: Array  # [B] int32; k ∈ [1, γ] (0 for a row that has ended, under a stop rule).
  draft_calls: Array   # [] int32; draft passes made (the batch shares them).


@dataclasses.dataclass(frozen=True)
class ConfidenceStop:
  """Adaptive γ: a row stops proposing after a token its draft gave probability < threshold.

  threshold: in (0, 1). The probability is the one the token was sampled with (after
  temperature/top-k/top-p); at temperature 0 it is the softmax of the draft's logits.
  """
  threshold: float

  def __post_init__(self):
    value = self.threshold
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise TypeError(f"confidence_threshold must be a number or None, got {value!r}")
    if not 0.0 < value < 1.0:  # Also rejects NaN.
      raise ValueError(f"confidence_threshold must be in (0, 1), got {value}")
    object.__setattr__(self, "threshold", float(value))

  def keep_proposing(self, confidence: Array) -> Array:
    """float `[B]` probabilities of the tokens just proposed → bool `[B]`."""
    return confidence >= self.threshold


def draft_token(logits: Array, keys: Array | None, sampling: Sampling,
                ) -> tuple[Array, Array | None]:
  """Draft logits `[B, V]` → the proposed token `[B]` and q `[B, V]` (None when greedy)."""
  if sampling.greedy:
    return sampling_lib.argmax(logits), None
  probs = sampling.probs(logits)
  return sampling_lib.sample_rows(keys, probs), probs


def confidence(logits: Array, probs: Array | None, tokens: Array) -> Array:
  """The draft's probability of its token `[B]`: from q `[B, V]`, or softmax(logits `[B, V]`)
  when greedy (q is None)."""
  if probs is None:
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(probs, tokens[:, None], axis=1)[:, 0]


def catch_up(draft: Any, draft_state: Any, decoded: Array, length: Array) -> tuple[Array, Any]:
  """Feeds the draft d[m-1 : m+1] (see `specdec.speculative`) → logits of q_1 `[B, V]` and its
  state at position m + 1."""
  catch_up_from = jnp.maximum(length - 1, 0)
  draft_state = draft.rewind(draft_state, catch_up_from)
  logits, draft_state = draft.extend(draft_state, read_rows(decoded, catch_up_from, 2))
  logits = jnp.take_along_axis(logits, (length - catch_up_from)[:, None, None], axis=1)[:, 0]
  return logits, draft.rewind(draft_state, length + 1)


def propose(draft: Any, draft_state: Any, decoded: Array, length: Array, active: Array,
            keys: Array | None, *, gamma: int, sampling: Sampling,
            stop: ConfidenceStop | None = None, unroll: int = 1) -> tuple[Proposal, Any]:
  """The draft catches up on row offsets `length` `[B]` and proposes up to `gamma` tokens.

  Args:
    draft: The draft model (`specdec.drafts.Draft`).
    draft_state: Its state; it has consumed at least d[0 : length-1] of `decoded`.
    decoded: int32 `[B, L]` decoder inputs d (see `specdec.speculative`).
    length: int32 `[B]`, m: the tokens generated so far.
    active: bool `[B]`, the rows still decoding (under a stop rule the others propose nothing).
    keys: `[B, γ+1]` per-row keys when sampling (token i uses keys[:, i-1]), else None.
    gamma: The most tokens proposed (static).
    sampling: How tokens are chosen (static).
    stop: None for γ tokens per row, or a stopping rule (adaptive γ).
    unroll: The fixed-length scan's `unroll` (static).

  Returns:
    (Proposal, the draft's state).
  """
  logits, draft_state = catch_up(draft, draft_state, decoded, length)
  if stop is None:
    return _propose_fixed(draft, draft_state, logits, keys, gamma=gamma, sampling=sampling,
                          unroll=unroll)
  return _propose_until_stop(draft, draft_state, logits, active, keys, gamma=gamma,
                             sampling=sampling, stop=stop)


def _propose_fixed(draft, draft_state, logits, keys, *, gamma, sampling, unroll):
  """γ tokens per row: a scan of γ − 1 draft steps after the catch-up pass."""
  batch = logits.shape[0]

  def draft_one(carry, step_keys):
    logits, draft_state = carry
    token, probs = draft_token(logits, step_keys, sampling)
    next_logits, draft_state = draft.extend(draft_state, token[:, None])
    return (next_logits[:, 0], draft_state), (token, probs)

  scan_keys = None if keys is None else jnp.swapaxes(keys[:, :gamma - 1], 0, 1)
  (logits, draft_state), (tokens, probs) = jax.lax.scan(
      draft_one, (logits, draft_state), scan_keys, length=gamma - 1, unroll=unroll)
  last_token, last_probs = draft_token(logits, None if keys is None else keys[:, gamma - 1],
                                       sampling)
  tokens = jnp.concatenate([jnp.swapaxes(tokens, 0, 1), last_token[:, None]], axis=1)
  if last_probs is not None:  # Greedy: no q.
    probs = jnp.concatenate([jnp.swapaxes(probs, 0, 1), last_probs[:, None]], axis=1)
  proposal = Proposal(tokens=tokens, probs=probs,
                      num_proposed=jnp.full((batch,), gamma, jnp.int32),
                      draft_calls=jnp.asarray(gamma, jnp.int32))
  return proposal, draft_state


@flax.struct.dataclass
class _StopState:
  step: Array          # [] int32; i, the draft tokens drawn so far (x_1..x_i).
  token: Array         # [B] int32; every row's x_i (junk in rows that stopped).
  draft_state: Any     # The draft's state; it has consumed x_1..x_{i-1}.
  tokens: Array        # [B, γ] int32; x_1..x_k, 0 past k.
  probs: Array | None  # [B, γ, V] float32; q_1..q_k, 0 past k (None when greedy).
  num_proposed: Array  # [B] int32; k so far.
  proposing: Array     # [B] bool; the row proposes x_{i+1}.


def _propose_until_stop(draft, draft_state, logits, active, keys, *, gamma, sampling, stop):
  """Up to γ tokens per row: one draft pass per step while any row is still proposing."""
  batch = logits.shape[0]

  def record(state: _StopState, logits: Array) -> _StopState:
    """Draws x_{i+1} from `logits` `[B, V]`; the rows still proposing keep it."""
    step = state.step
    token, probs = draft_token(logits, None if keys is None else keys[:, step], sampling)
    proposing = state.proposing
    tokens = jax.lax.dynamic_update_index_in_dim(
        state.tokens, jnp.where(proposing, token, 0), step, axis=1)
    all_probs = state.probs
    if probs is not None:
      all_probs = jax.lax.dynamic_update_index_in_dim(
          all_probs, jnp.where(proposing[:, None], probs, 0.0), step, axis=1)
    keep = stop.keep_proposing(confidence(logits, probs, token)) & (step + 1 < gamma)
    return state.replace(step=step + 1, token=token, tokens=tokens, probs=all_probs,
                         num_proposed=state.num_proposed + proposing.astype(jnp.int32),
                         proposing=proposing & keep)

  def next_token(state: _StopState) -> _StopState:
    logits, draft_state = draft.extend(state.draft_state, state.token[:, None])
    return record(state.replace(draft_state=draft_state), logits[:, 0])

  zeros = jnp.zeros((batch,), jnp.int32)
  initial = _StopState(
      step=jnp.zeros((), jnp.int32), token=zeros, draft_state=draft_state,
      tokens=jnp.zeros((batch, gamma), jnp.int32),
      probs=None if sampling.greedy else jnp.zeros((batch, gamma, logits.shape[-1]),
                                                   jnp.float32),
      num_proposed=zeros, proposing=active)
  state = record(initial, logits)  # x_1, from the catch-up pass.
  # A while loop, not a scan of γ − 1 steps that skips the draft's pass under a `lax.cond`:
  # on the shipped pair (CPU, batch 1 and 8, T = 0 and 1) the two took the same time within
  # noise at three settings and the scan 1.33x as long at the fourth (T = 1, batch 1).
  state = jax.lax.while_loop(lambda s: jnp.any(s.proposing), next_token, state)
  # One pass per token drawn: the catch-up pass, then one per step.
  return Proposal(tokens=state.tokens, probs=state.probs, num_proposed=state.num_proposed,
                  draft_calls=state.step), state.draft_state
