"""`speculative_generate`: the paper's Algorithm 1 as one jitted, shape-static `lax.while_loop`.

Each iteration, for every unfinished row (rows accept different numbers of tokens, each at its
own offset):

  1. the draft catches up on the token(s) it has not seen and proposes γ tokens x_1..x_γ,
     sampled from q_1..q_γ (a `lax.scan` over the draft's cache);
  2. the target scores the block [last token, x_1..x_γ] in ONE pass → p_1..p_{γ+1};
  3. `verify` keeps x_1..x_n and draws the next token t from norm(max(0, p_{n+1} − q_{n+1}))
     (or from p_{γ+1} when all γ are kept);
  4. x_1..x_n, t are written at the row's offset; both caches are rolled back by position.

Bookkeeping. Let d = [0, y_1, y_2, ...] be a row's decoder inputs and m the number of tokens
generated so far. At the top of an iteration the target has consumed d[0 : m] and the pending
token is d[m]. The draft has consumed at least d[0 : m-1]: after a rejection it has seen every
kept token but not the correction t = d[m]; after a fully accepted block it has not seen x_γ
= d[m-1] either. So the draft is rewound to max(m-1, 0) and fed the 2-token block d[m-1 : m+1]
(re-feeding d[m-1] rewrites an identical entry); at m = 0 only d[0] is meaningful and the logits
are read from block index 0. Either way q_1 is the draft's distribution after d[0 : m+1].

Temperature/top-k/top-p process p and q alike, so the processed target distribution is what is
sampled exactly. At temperature 0 the greedy rule applies and the output equals `generate`'s.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib
from specdec.cache import read_rows, write_rows
from specdec.decoding import check_decode_args, end_after_eos
from specdec.drafts import Draft, check_draft, check_pair, start_pair
from specdec.sampling import Sampling
from specdec.validation import check_positive_int
from specdec.verification import verify_greedy, verify_rows

Array = jax.Array


@flax.struct.dataclass
class SpeculativeStats:
  """Per-row counters, int32 `[B]`."""
  target_calls: Array  # Target passes (one per iteration the row took part in).
  draft_calls: Array   # Draft passes (γ per iteration).
  drafted: Array       # Draft tokens proposed (γ per iteration).
  accepted: Array      # Draft tokens the target kept.
  rejected: Array      # Iterations that ended in a rejection (the rest kept all γ).

  def summary(self) -> dict[str, float]:
    """Batch totals and the derived rates (see `specdec.analysis`)."""
    from specdec import analysis  # pylint: disable=g-import-not-at-top
    return analysis.summarize(self)


@flax.struct.dataclass
class SpeculativeResult:
  tokens: Array  # [B, max_decode_len] int32; 0 after each row's first EOS.
  stats: SpeculativeStats


@flax.struct.dataclass
class _LoopState:
  iteration: Array     # [] int32.
  decoded: Array       # [B, 1 + max_len + γ + 1] int32; d = [0, y_1, ...], junk past 1 + length.
  length: Array        # [B] int32; m, tokens generated so far.
  done: Array          # [B] bool; the row has produced EOS or reached max_decode_len.
  target_state: Any    # The target's cache; position m at the top of an iteration.
  draft_state: Any     # The draft's state.
  stats: SpeculativeStats


def speculative_generate(target: Draft, draft: Draft, encoder_input_tokens: Array, *,
                         gamma: int, max_decode_len: int, temperature: float = 0.0,
                         top_k: int = 0, top_p: float = 1.0, rng: Array | None = None,
                         eos_id: int | None = 1, draft_unroll: int = 1) -> SpeculativeResult:
  """Decodes from `target` with `draft` proposing `gamma` tokens per target pass.

  The output is distributed exactly as `generate(target, ...)`'s (equal to it at temperature 0).

  Args:
    target: The model to sample from (a `T5Model`, or any `Draft`-protocol model).
    draft: The proposer: a smaller `T5Model`, a `SharedEncoderDraft` (reads the target's encoder
      output; the input is then encoded once, by the target), `UnigramDraft`, `BigramDraft`,
      `PromptLookupDraft`, or anything implementing `specdec.drafts.Draft` over the same
      vocabulary.
    encoder_input_tokens: int `[B, S]`, 0 = padding.
    gamma: Draft tokens per target pass (static).
    max_decode_len, temperature, top_k, top_p, rng, eos_id: as in `specdec.generate`.
    draft_unroll: Draft steps per iteration of the draft's `lax.scan` (its `unroll`; static,
      >= 1; γ − 1 or more unrolls it fully). Changes speed only, never the tokens.

  Returns:
    SpeculativeResult: `.tokens` int32 `[B, max_decode_len]` and per-row `.stats`.
  """
  tokens, max_decode_len, sampling, rng = check_decode_args(
      target, encoder_input_tokens, max_decode_len=max_decode_len, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=rng, eos_id=eos_id, model_name="target")
  check_draft(draft, name="draft")
  gamma = check_positive_int("gamma", gamma)
  draft_unroll = check_positive_int("draft_unroll", draft_unroll)
  check_pair(target, draft)
  return _speculative_generate(target, draft, tokens, rng, gamma=gamma,
                               max_decode_len=max_decode_len, sampling=sampling, eos_id=eos_id,
                               draft_unroll=draft_unroll)


@functools.partial(jax.jit, static_argnames=("gamma", "max_decode_len", "sampling", "eos_id",
                                             "draft_unroll"))
def _speculative_generate(target, draft, encoder_input_tokens, rng, *, gamma, max_decode_len,
                          sampling: Sampling, eos_id, draft_unroll: int = 1):
  batch = encoder_input_tokens.shape[0]
  row_keys = sampling_lib.row_keys(rng, batch)
  # Rows that ended keep their position (≤ max_len + γ) and still take part in the batched
  # passes, so caches need room for one more block past that.
  cache_length = max_decode_len + 2 * (gamma + 1)
  zeros = jnp.zeros((batch,), jnp.int32)
  target_state, draft_state = start_pair(target, draft, encoder_input_tokens,
                                         cache_length=cache_length)
  initial = _LoopState(
      iteration=jnp.zeros((), jnp.int32),
      decoded=jnp.zeros((batch, max_decode_len + gamma + 2), jnp.int32),
      length=zeros, done=jnp.zeros((batch,), bool),
      target_state=target_state, draft_state=draft_state,
      stats=SpeculativeStats(zeros, zeros, zeros, zeros, zeros))

  def draft_token(logits: Array, keys: Array | None) -> tuple[Array, Array | None]:
    """Draft logits `[B, V]` → the proposed token `[B]` and q `[B, V]` (None when greedy)."""
    if sampling.greedy:
      return jnp.argmax(logits, axis=-1).astype(jnp.int32), None
    probs = sampling.probs(logits)
    return sampling_lib.sample_rows(keys, probs), probs

  def propose(state: _LoopState, keys: Array | None):
    """The draft catches up and proposes γ tokens: `[B, γ]`, q `[B, γ, V]` (None when greedy),
    and its state. keys: `[B, γ+1]` per-row keys when sampling, else None."""
    m = state.length
    catch_up_from = jnp.maximum(m - 1, 0)
    draft_state = draft.rewind(state.draft_state, catch_up_from)
    logits, draft_state = draft.extend(draft_state, read_rows(state.decoded, catch_up_from, 2))
    logits = jnp.take_along_axis(logits, (m - catch_up_from)[:, None, None], axis=1)[:, 0]
    draft_state = draft.rewind(draft_state, m + 1)

    def draft_one(carry, step_keys):
      logits, draft_state = carry
      token, probs = draft_token(logits, step_keys)
      next_logits, draft_state = draft.extend(draft_state, token[:, None])
      return (next_logits[:, 0], draft_state), (token, probs)

    scan_keys = None if keys is None else jnp.swapaxes(keys[:, :gamma - 1], 0, 1)
    (logits, draft_state), (tokens, probs) = jax.lax.scan(
        draft_one, (logits, draft_state), scan_keys, length=gamma - 1, unroll=draft_unroll)
    last_token, last_probs = draft_token(logits, None if keys is None else keys[:, gamma - 1])
    tokens = jnp.concatenate([jnp.swapaxes(tokens, 0, 1), last_token[:, None]], axis=1)
    if last_probs is not None:
      probs = jnp.concatenate([jnp.swapaxes(probs, 0, 1), last_probs[:, None]], axis=1)
    return tokens, probs, draft_state

  def keep_going(state: _LoopState) -> Array:
    return ~jnp.all(state.done)

  def iteration(state: _LoopState) -> _LoopState:
    m, active = state.length, ~state.done
    keys = None if sampling.greedy else jax.vmap(lambda k: jax.random.split(k, gamma + 1))(
        sampling_lib.step_keys(row_keys, state.iteration))  # [B, γ+1]

    # 1. Draft γ tokens.
    draft_tokens, draft_probs, draft_state = propose(state, keys)

    # 2. One target pass over [pending token, x_1..x_γ].
    pending = jnp.take_along_axis(state.decoded, m[:, None], axis=1)
    target_state = target.rewind(state.target_state, m)
    target_logits, target_state = target.extend(
        target_state, jnp.concatenate([pending, draft_tokens], axis=1))

    # 3. Verify.
    if sampling.greedy:
      num_accepted, next_token = verify_greedy(draft_tokens, target_logits)
    else:
      num_accepted, next_token = verify_rows(
          draft_tokens, draft_probs, sampling.probs(target_logits), keys[:, gamma])

    # 4. Write x_1..x_n, t at the row's offset; everything past them in the block is zeroed.
    slot = jnp.arange(gamma + 1)[None, :]
    padded = jnp.concatenate([draft_tokens, jnp.zeros((batch, 1), jnp.int32)], axis=1)
    new = jnp.where(slot < num_accepted[:, None], padded,
                    jnp.where(slot == num_accepted[:, None], next_token[:, None], 0))
    decoded = jnp.where(active[:, None], write_rows(state.decoded, new, m + 1), state.decoded)
    new_length = jnp.where(active, m + num_accepted + 1, m)
    ended = new_length >= max_decode_len
    if eos_id is not None:
      ended |= jnp.any((new == eos_id) & (slot <= num_accepted[:, None]), axis=1)

    count = active.astype(jnp.int32)
    stats = SpeculativeStats(
        target_calls=state.stats.target_calls + count,
        draft_calls=state.stats.draft_calls + gamma * count,
        drafted=state.stats.drafted + gamma * count,
        accepted=state.stats.accepted + num_accepted * count,
        rejected=state.stats.rejected + (num_accepted < gamma) * count)
    return _LoopState(iteration=state.iteration + 1, decoded=decoded, length=new_length,
                      done=state.done | (active & ended), target_state=target_state,
                      draft_state=draft_state, stats=stats)

  final = jax.lax.while_loop(keep_going, iteration, initial)
  tokens = final.decoded[:, 1:max_decode_len + 1]
  return SpeculativeResult(tokens=end_after_eos(tokens, eos_id), stats=final.stats)
