"""`speculative_generate`: the paper's Algorithm 1 as one jitted, shape-static `lax.while_loop`.

Each iteration, for every unfinished row (rows accept different numbers of tokens, each at its
own offset):

  1. `propose`: the draft catches up on the token(s) it has not seen and proposes γ tokens
     x_1..x_γ, sampled from q_1..q_γ (a `lax.scan` over the draft's cache), or fewer under
     adaptive γ (`specdec.proposal`);
  2. the target scores the block [last token, x_1..x_γ] in ONE pass → p_1..p_{γ+1};
  3. the verification rule keeps x_1..x_n and draws the next token t: the paper's rule keeps x_i
     while r_i < p_i(x_i) / q_i(x_i) and draws t from norm(max(0, p_{n+1} − q_{n+1})) (or from
     p_{γ+1} when all γ are kept); block verification decides on the block jointly
     (`specdec.verification`);
  4. `commit`: x_1..x_n, t are written at the row's offset; both caches are rolled back by
     position.

Bookkeeping. Let d = [0, y_1, y_2, ...] be a row's decoder inputs and m the number of tokens
generated so far. At the top of an iteration the target has consumed d[0 : m] and the pending
token is d[m]. The draft has consumed at least d[0 : m-1]: after a rejection it has seen every
kept token but not the correction t = d[m]; after a fully accepted block it has not seen x_γ
= d[m-1] either (nor x_k after k of γ under adaptive γ, which stops before feeding x_k). So the draft is rewound to max(m-1, 0) and fed the 2-token block d[m-1 : m+1]
(re-feeding d[m-1] rewrites an identical entry); at m = 0 only d[0] is meaningful and the logits
are read from block index 0. Either way q_1 is the draft's distribution after d[0 : m+1].

Temperature/top-k/top-p process p and q alike, so the processed target distribution is what is
sampled exactly. At temperature 0 the greedy rule applies (whatever the verification) and the
output equals `generate`'s.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib
from specdec.cache import write_rows
from specdec.decoding import check_decode_args, end_after_eos
from specdec.drafts import Draft, check_draft, check_pair, start_pair
from specdec.proposal import ConfidenceStop, Proposal, propose
from specdec.sampling import Sampling
from specdec.validation import check_positive_int
from specdec.verification import VerificationRule, choose_rule

Array = jax.Array


@flax.struct.dataclass
class SpeculativeStats:
  """Per-row counters, int32 `[B]`."""
  target_calls: Array  # Target passes (one per iteration the row took part in).
  draft_calls: Array   # Draft passes made in those iterations (γ each, fewer under adaptive γ).
  drafted: Array       # Draft tokens the row proposed (γ per iteration, or fewer).
  accepted: Array      # Draft tokens the target kept.
  rejected: Array      # Iterations that ended in a rejection (the rest kept all proposed).

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
                         eos_id: int | None = 1, verification: str = "token",
                         confidence_threshold: float | None = None, lenience: float = 1.0,
                         draft_unroll: int = 1) -> SpeculativeResult:
  """Decodes from `target` with `draft` proposing `gamma` tokens per target pass.

  The output is distributed exactly as `generate(target, ...)`'s (equal to it at temperature 0),
  whatever the verification and adaptive γ; only lenience < 1 changes it.

  Args:
    target: The model to sample from (a `T5Model`, or any `Draft`-protocol model).
    draft: The proposer: a smaller `T5Model`, a `SharedEncoderDraft` (reads the target's encoder
      output; the input is then encoded once, by the target), `UnigramDraft`, `BigramDraft`,
      `PromptLookupDraft`, or anything implementing `specdec.drafts.Draft` over the same
      vocabulary.
    encoder_input_tokens: int `[B, S]`, 0 = padding.
    gamma: Draft tokens per target pass (static); the most per pass under adaptive γ.
    max_decode_len, temperature, top_k, top_p, rng, eos_id: as in `specdec.generate`.
    verification: "token", the paper's rule (token by token), or "block", block verification
      (Sun et al., ICLR 2025): the γ tokens verified jointly, exact as well, never fewer tokens
      kept in expectation. At temperature 0 both are the greedy rule.
    confidence_threshold: None (γ tokens every pass), or adaptive γ: in (0, 1), a row stops
      proposing after a token its draft gave probability below it, and the draft's steps stop
      once no row is proposing (`specdec.proposal`). Exact: the decision is the draft's own.
    lenience: The paper's lenience l in (0, 1] (its Appendix A.5), for verification="token" at
      temperature > 0: x_i is kept while r_i < p_i(x_i) / (l·q_i(x_i)), the next token drawn from
      norm(max(0, p − l·q)). 1 (the default) is exact; l < 1 accepts more and CHANGES THE OUTPUT
      DISTRIBUTION (toward the draft's; see `specdec.verification.TokenVerification`).
    draft_unroll: Draft steps per iteration of the draft's `lax.scan` (its `unroll`; static,
      >= 1; γ − 1 or more unrolls it fully). Changes speed only, never the tokens. Not with
      adaptive γ, whose draft steps run in a `lax.while_loop`.

  Returns:
    SpeculativeResult: `.tokens` int32 `[B, max_decode_len]` and per-row `.stats`.
  """
  tokens, max_decode_len, sampling, rng = check_decode_args(
      target, encoder_input_tokens, max_decode_len=max_decode_len, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=rng, eos_id=eos_id, model_name="target")
  check_draft(draft, name="draft")
  gamma = check_positive_int("gamma", gamma)
  rule = choose_rule(verification, lenience=lenience, sampling=sampling)
  stop = None if confidence_threshold is None else ConfidenceStop(confidence_threshold)
  draft_unroll = check_positive_int("draft_unroll", draft_unroll)
  if stop is not None and draft_unroll != 1:
    raise ValueError(f"draft_unroll={draft_unroll} unrolls the fixed-length draft scan; with "
                     "confidence_threshold the draft's steps run in a while loop (leave it 1)")
  check_pair(target, draft)
  return _speculative_generate(target, draft, tokens, rng, gamma=gamma,
                               max_decode_len=max_decode_len, sampling=sampling, eos_id=eos_id,
                               rule=rule, stop=stop, draft_unroll=draft_unroll)


def commit(decoded: Array, length: Array, active: Array, proposal: Proposal, num_accepted: Array,
           next_token: Array, *, max_decode_len: int, eos_id: int | None,
           ) -> tuple[Array, Array, Array]:
  """Step 4: writes x_1..x_n, t at each active row's offset m + 1 (the rest of the block 0).

  decoded int32 `[B, L]`, length (m) int32 `[B]`, active bool `[B]`, num_accepted (n) and
  next_token (t) int32 `[B]` → (decoded, the new length `[B]`, ended bool `[B]`: the row reached
  max_decode_len or wrote EOS).
  """
  batch, gamma = proposal.tokens.shape
  slot = jnp.arange(gamma + 1)[None, :]
  padded = jnp.concatenate([proposal.tokens, jnp.zeros((batch, 1), jnp.int32)], axis=1)
  new = jnp.where(slot < num_accepted[:, None], padded,
                  jnp.where(slot == num_accepted[:, None], next_token[:, None], 0))
  decoded = jnp.where(active[:, None], write_rows(decoded, new, length + 1), decoded)
  new_length = jnp.where(active, length + num_accepted + 1, length)
  ended = new_length >= max_decode_len
  if eos_id is not None:
    ended |= jnp.any((new == eos_id) & (slot <= num_accepted[:, None]), axis=1)
  return decoded, new_length, active & ended


def count(stats: SpeculativeStats, active: Array, proposal: Proposal,
          num_accepted: Array) -> SpeculativeStats:
  """Adds one iteration's counts to the active rows' stats."""
  add = active.astype(jnp.int32)
  return SpeculativeStats(
      target_calls=stats.target_calls + add,
      draft_calls=stats.draft_calls + proposal.draft_calls * add,
      drafted=stats.drafted + proposal.num_proposed * add,
      accepted=stats.accepted + num_accepted * add,
      rejected=stats.rejected + (num_accepted < proposal.num_proposed) * add)


@functools.partial(jax.jit, static_argnames=("gamma", "max_decode_len", "sampling", "eos_id",
                                             "rule", "stop", "draft_unroll"))
def _speculative_generate(target, draft, encoder_input_tokens, rng, *, gamma, max_decode_len,
                          sampling: Sampling, eos_id, rule: VerificationRule | None = None,
                          stop: ConfidenceStop | None = None, draft_unroll: int = 1):
  if rule is None:  # The defaults of `speculative_generate`.
    rule = choose_rule("token", lenience=1.0, sampling=sampling)
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

  def keep_going(state: _LoopState) -> Array:
    return ~jnp.all(state.done)

  def iteration(state: _LoopState) -> _LoopState:
    m, active = state.length, ~state.done
    keys = None if sampling.greedy else jax.vmap(lambda k: jax.random.split(k, gamma + 1))(
        sampling_lib.step_keys(row_keys, state.iteration))  # [B, γ+1]

    # 1. Draft γ tokens (or fewer, under adaptive γ).
    proposal, draft_state = propose(draft, state.draft_state, state.decoded, m, active, keys,
                                    gamma=gamma, sampling=sampling, stop=stop,
                                    unroll=draft_unroll)

    # 2. One target pass over [pending token, x_1..x_γ].
    pending = jnp.take_along_axis(state.decoded, m[:, None], axis=1)
    target_state = target.rewind(state.target_state, m)
    target_logits, target_state = target.extend(
        target_state, jnp.concatenate([pending, proposal.tokens], axis=1))

    # 3. Verify.
    num_accepted, next_token = rule.verify(proposal, target_logits,
                                           None if keys is None else keys[:, gamma],
                                           sampling=sampling)

    # 4. Write x_1..x_n, t at the row's offset; everything past them in the block is zeroed.
    decoded, length, ended = commit(state.decoded, m, active, proposal, num_accepted,
                                    next_token, max_decode_len=max_decode_len, eos_id=eos_id)
    return _LoopState(iteration=state.iteration + 1, decoded=decoded, length=length,
                      done=state.done | ended, target_state=target_state,
                      draft_state=draft_state,
                      stats=count(state.stats, active, proposal, num_accepted))

  final = jax.lax.while_loop(keep_going, iteration, initial)
  tokens = final.decoded[:, 1:max_decode_len + 1]
  return SpeculativeResult(tokens=end_after_eos(tokens, eos_id), stats=final.stats)
