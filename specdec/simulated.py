"""A simulated-acceptance draft: a benchmarking tool that fixes α while paying a real draft's cost.

Timing speculative decoding at the paper's sizes needs drafts with the paper's acceptance rates,
but random-weight models (all a benchmark without the paper's checkpoints has) agree on almost
nothing: α ≈ 1/V. `SimulatedDraft` separates the two things a draft contributes to walltime:

* **cost**: it wraps a real draft (e.g. a random-weight T5 1.1 small) and runs that draft's
  `extend` on exactly the tokens a normal draft would see, as often as a normal draft is called,
  so every draft step costs what the wrapped draft's step costs. The returned logits depend on
  the wrapped draft's logits (a bounded perturbation that never changes the argmax), so XLA
  cannot dead-code-eliminate the wrapped draft's work. Its own extra work is one elementwise
  pass over the `[B, k, V]` logits per step (fused by XLA; small next to a T5 step);
* **acceptance**: it proposes the target's own greedy continuation (decoded once beforehand,
  e.g. with `specdec.generate`, and given as int32 `[B, L]`), replaced by a different token at a
  fixed random set of positions (each position wrong with probability 1 − α, from a seed). Greedy
  verification keeps a proposal iff it is the target's argmax, so each proposal is accepted with
  probability α exactly (each decoded position is tested at most once, and which positions are
  tested depends only on earlier outcomes).

Semantics:

* Temperature 0 (greedy): the output is `generate`'s (the loop is exact for any draft), and
  acceptance follows the position mask. `replay` gives the exact counts the loop must report
  (`eos_id=None`); `settle` handles accelerators whose verify pass rounds differently from
  `generate`'s single-token steps (a flipped near-tie would otherwise desynchronise the
  continuation and α would collapse after it).
* Sampling (T > 0): the output is still distributed exactly as the target's (speculative
  sampling is exact for any q), but α no longer means the configured value: q is (numerically)
  one-hot at the proposed token, so a proposal x is kept with probability p(x), the target's
  probability of the token the *greedy* path would have taken. Use it at T > 0 to time a loop,
  not to set α.
* Positions past the continuation (index ≥ L; only the last block of a row reaches them when
  L = max_decode_len) propose token 0, which the target rejects unless 0 is its argmax there.

Only benchmarks should use this; it is not a draft that speeds anything up.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from specdec.drafts import check_draft, reads_target_encoder

Array = jax.Array

# Logits: 0 at the proposal, OFF_LOGIT elsewhere, plus LIVE_SCALE · tanh(wrapped draft's logits),
# which keeps the wrapped draft's work live and moves no logit by more than LIVE_SCALE.
OFF_LOGIT = -1e4
LIVE_SCALE = 1e-3


@flax.struct.dataclass
class SimulatedState:
  inner: Any       # The wrapped draft's state.
  position: Array  # [B] int32; decoder tokens consumed per row.


@flax.struct.dataclass
class SimulatedDraft:
  """Proposes `proposals[b, j]` as the token after decoder position j; runs `draft` alongside.

  Build one with `simulate_acceptance`. A pytree: the proposals and the mask are arguments of
  the jitted loop, so drafts with other α, seeds or continuations reuse its compilation.
  """
  draft: Any        # The wrapped draft (any `specdec.drafts.Draft`), whose cost is paid.
  proposals: Array  # [B, L] int32; continuation, with a different token where `wrong`.
  wrong: Array      # [B, L] bool; positions whose proposal is not the continuation's token.

  @property
  def vocab_size(self) -> int:
    return self.draft.vocab_size

  @property
  def alpha_realised(self) -> float:
    """The fraction of positions whose proposal is the continuation's token."""
    return 1.0 - float(np.mean(np.asarray(self.wrong)))

  def _check_batch(self, encoder_input_tokens: Array) -> None:
    if encoder_input_tokens.shape[0] != self.proposals.shape[0]:
      raise ValueError(f"encoder_input_tokens has {encoder_input_tokens.shape[0]} rows but the "
                       f"simulated draft's continuation has {self.proposals.shape[0]}")

  def start(self, encoder_input_tokens, *, cache_length):
    self._check_batch(encoder_input_tokens)
    inner = self.draft.start(encoder_input_tokens, cache_length=cache_length)
    return SimulatedState(inner=inner, position=jnp.zeros((encoder_input_tokens.shape[0],),
                                                          jnp.int32))

  def extend(self, state, tokens):
    inner_logits, inner = self.draft.extend(state.inner, tokens)
    index = state.position[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, k]
    length = self.proposals.shape[1]
    proposed = jnp.take_along_axis(self.proposals, jnp.minimum(index, length - 1), axis=1)
    proposed = jnp.where(index < length, proposed, 0)
    return (proposal_logits(proposed, inner_logits, self.vocab_size),
            SimulatedState(inner=inner, position=state.position + tokens.shape[1]))

  def rewind(self, state, position):
    return SimulatedState(inner=self.draft.rewind(state.inner, position),
                          position=position.astype(jnp.int32))


@flax.struct.dataclass
class SimulatedSharedEncoderDraft(SimulatedDraft):
  """A `SimulatedDraft` around a `drafts.TargetEncoderDraft` (e.g. a `SharedEncoderDraft`): it
  reads the target's encoder output as the wrapped draft does."""

  def check_target(self, target) -> None:
    self.draft.check_target(target)

  def start_from_encoded(self, encoder_input_tokens, encoded, *, cache_length):
    self._check_batch(encoder_input_tokens)
    inner = self.draft.start_from_encoded(encoder_input_tokens, encoded,
                                          cache_length=cache_length)
    return SimulatedState(inner=inner, position=jnp.zeros((encoder_input_tokens.shape[0],),
                                                          jnp.int32))


def proposal_logits(proposed: Array, live: Array, vocab_size: int) -> Array:
  """float32 `[B, k, V]`: 0 at `proposed` `[B, k]`, OFF_LOGIT elsewhere, each moved by less than
  LIVE_SCALE by `live` `[B, k, V]` (non-finite entries count as 0), so the argmax is `proposed`
  whatever `live` holds and `live`'s computation cannot be eliminated."""
  live = jnp.asarray(live, jnp.float32)
  live = jnp.tanh(jnp.where(jnp.isfinite(live), live, 0.0))
  base = jnp.where(jax.nn.one_hot(proposed, vocab_size, dtype=bool), 0.0, OFF_LOGIT)
  return (base + LIVE_SCALE * live).astype(jnp.float32)


def wrong_mask(shape: tuple[int, int], *, alpha: float, seed: int) -> np.ndarray:
  """bool `shape`: each position wrong with probability 1 − alpha, from numpy's `seed` stream.

  Masks of one seed are nested: a higher α marks a subset of a lower α's positions.
  """
  return np.random.default_rng(seed).random(shape) >= alpha


def simulate_acceptance(draft: Any, continuation: Any, *, alpha: float,
                        seed: int = 0) -> SimulatedDraft:
  """A draft that costs what `draft` costs and is accepted with probability `alpha` (greedy).

  Args:
    draft: The draft whose per-step cost is paid (any `specdec.drafts.Draft`; a
      `TargetEncoderDraft` gives a `SimulatedSharedEncoderDraft`).
    continuation: int `[B, L]`, the target's greedy output for the prompts the draft will be
      started on (`specdec.generate(target, prompts, max_decode_len=L, eos_id=None).tokens`),
      row b for prompt b.
    alpha: Probability in [0, 1] that a position's proposal is the continuation's token.
    seed: Seed of the position mask (and of the wrong tokens).

  Returns:
    A `SimulatedDraft` (or `SimulatedSharedEncoderDraft`).
  """
  check_draft(draft, name="draft")
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
    raise TypeError(f"alpha must be a float, got {alpha!r}")
  if not 0.0 <= float(alpha) <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be an int >= 0, got {seed!r}")
  tokens = np.asarray(continuation)
  if not np.issubdtype(tokens.dtype, np.integer):
    raise TypeError(f"continuation must be an integer array, got {tokens.dtype}")
  if tokens.ndim != 2 or 0 in tokens.shape:
    raise ValueError(f"continuation must be a non-empty [B, L] array, got shape {tokens.shape}")
  vocab = draft.vocab_size
  if tokens.min() < 0 or tokens.max() >= vocab:
    raise ValueError(f"continuation holds ids outside [0, {vocab}): min {tokens.min()}, "
                     f"max {tokens.max()}")
  if vocab < 2:
    raise ValueError(f"a wrong token needs vocab_size >= 2, got {vocab}")
  wrong = wrong_mask(tokens.shape, alpha=float(alpha), seed=int(seed))
  offsets = np.random.default_rng([int(seed), 1]).integers(1, vocab, tokens.shape)
  proposals = np.where(wrong, (tokens + offsets) % vocab, tokens)
  cls = SimulatedSharedEncoderDraft if reads_target_encoder(draft) else SimulatedDraft
  return cls(draft=draft, proposals=jnp.asarray(proposals, jnp.int32),
             wrong=jnp.asarray(wrong, bool))


@dataclasses.dataclass(frozen=True)
class Replay:
  """Per-row counts the loop reports for a mask (all int64 `[B]`)."""
  target_calls: np.ndarray
  accepted: np.ndarray
  rejected: np.ndarray

  @property
  def alpha(self) -> float:
    """α̂ = accepted / (accepted + rejected) over the batch (`analysis.alpha_from_counts`)."""
    total = int(self.accepted.sum() + self.rejected.sum())
    return float(self.accepted.sum()) / total if total else float("nan")


def replay(wrong: Any, *, gamma: int, max_decode_len: int) -> Replay:
  """The counts `speculative_generate(..., eos_id=None)` reports with a `SimulatedDraft` of mask
  `wrong` `[B, L]`, when the target agrees with the continuation everywhere (greedy).

  Each iteration a row at length m tests positions m, m+1, ... (positions ≥ L are wrong) until
  the first wrong one or γ kept, then gains the kept tokens and the target's one.
  """
  wrong = np.asarray(wrong, bool)
  batch, length = wrong.shape
  calls, accepted, rejected = (np.zeros(batch, np.int64) for _ in range(3))
  for b in range(batch):
    m = 0
    while m < max_decode_len:
      n = 0
      while n < gamma and m + n < length and not wrong[b, m + n]:
        n += 1
      calls[b] += 1
      accepted[b] += n
      rejected[b] += n < gamma
      m += n + 1
  return Replay(target_calls=calls, accepted=accepted, rejected=rejected)


@dataclasses.dataclass(frozen=True)
class Settled:
  """What `settle` found: the draft to time, and how many speculative runs it took."""
  draft: SimulatedDraft
  passes: int       # Runs of speculative_generate (1: the continuation was already the loop's).
  converged: bool   # The last run's output equals the draft's continuation.
  tokens: np.ndarray  # int32 [B, max_decode_len]; the last run's output.


def settle(target: Any, draft: Any, encoder_input_tokens: Any, continuation: Any, *,
           alpha: float, seed: int, gamma: int, max_decode_len: int, max_passes: int = 16,
           **speculative_kwargs: Any) -> Settled:
  """A `SimulatedDraft` whose continuation is the speculative loop's own greedy output.

  In exact arithmetic `continuation` (generate's output) is what the loop decodes. On devices
  where the (γ+1)-token verify pass rounds differently from one-token steps, a near-tie can flip
  and the loop's output leaves the continuation; every later proposal would then be rejected.
  Each pass reruns the loop with its previous output as the continuation; the first position
  where they differ moves strictly later each pass (the loop's numerics up to a position depend
  only on the blocks before it), so this stops after at most one pass per flip.

  `speculative_kwargs` go to `speculative_generate` (eos_id defaults to None, which `replay`
  assumes). The result's `converged` is False if `max_passes` runs did not reach a fixed point.
  """
  from specdec.speculative import speculative_generate  # pylint: disable=g-import-not-at-top
  speculative_kwargs.setdefault("eos_id", None)
  current = np.asarray(continuation)
  if current.ndim != 2 or current.shape[1] < max_decode_len:
    raise ValueError(f"continuation must be [B, L] with L >= max_decode_len={max_decode_len}, "
                     f"got shape {current.shape}")
  for passes in range(1, max_passes + 1):
    sim = simulate_acceptance(draft, current, alpha=alpha, seed=seed)
    out = np.asarray(speculative_generate(target, sim, encoder_input_tokens, gamma=gamma,
                                          max_decode_len=max_decode_len,
                                          **speculative_kwargs).tokens)
    if np.array_equal(out, current[:, :max_decode_len]):
      return Settled(draft=sim, passes=passes, converged=True, tokens=out)
    current = np.concatenate([out, current[:, max_decode_len:]], axis=1).astype(np.int32)
  return Settled(draft=simulate_acceptance(draft, current, alpha=alpha, seed=seed),
                 passes=max_passes, converged=False, tokens=out)
