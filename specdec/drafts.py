"""Drafts: anything that proposes tokens cheaply, behind one small protocol.

The protocol is that of a cached language model, the same one the target implements, so a
`T5Model` is a draft as it is. The paper's trivial drafts (`UnigramDraft`, `BigramDraft`) and
`PromptLookupDraft` cost almost nothing and make the loop cheap to test.

A draft's state tracks, per row, how many decoder tokens it has consumed (`position`); the
speculative loop feeds blocks with `extend` and rolls rows back with `rewind`. All methods must be
traceable (they run inside `jit`), and a draft should be a pytree (e.g. a `flax.struct.dataclass`)
so its arrays are arguments of the jitted loop rather than constants baked into it.
"""

from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from specdec.cache import write_rows

Array = jax.Array
State = Any


@runtime_checkable
class Draft(Protocol):
  """A cached language model over the target's vocabulary."""

  @property
  def vocab_size(self) -> int:
    """Size of the token vocabulary; must equal the target's."""

  def start(self, encoder_input_tokens: Array, *, cache_length: int) -> State:
    """State for int32 `[B, S]` encoder inputs, room for `cache_length` decoder tokens per row."""

  def extend(self, state: State, tokens: Array) -> tuple[Array, State]:
    """Feeds int32 `[B, k]` at each row's position → (float32 logits `[B, k, V]`, state).

    `logits[b, i]` is the distribution of the token after `tokens[b, i]`; positions advance by k.
    """

  def rewind(self, state: State, position: Array) -> State:
    """Sets each row's position `[B]`: later entries must never influence results again."""


@runtime_checkable
class EncodingTarget(Protocol):
  """A target whose encoder output a draft can share (a `T5Model` is one)."""

  def encode(self, encoder_input_tokens: Array) -> Array:
    """int32 `[B, S]` encoder inputs → the encoder's output `[B, S, emb]`."""

  def start(self, encoder_input_tokens: Array, *, cache_length: int,
            encoded: Array | None = None) -> State:
    """As `Draft.start`; given `encoded` (this model's `encode` of the same inputs) it does not
    encode again."""


@runtime_checkable
class TargetEncoderDraft(Protocol):
  """A draft that reads the target's encoder output instead of encoding the input itself.

  `speculative_generate` encodes the input once with the target and starts both models from
  that output (as T5X binds `encoded_inputs` into `tokens_to_logits` before its loop); the loop
  body does not know which kind of draft it drives. Apart from `start`, such a draft is a `Draft`.
  """

  def check_target(self, target: Any) -> None:
    """Raises ValueError naming both sides if `target`'s encoder is not one this draft reads."""

  def start_from_encoded(self, encoder_input_tokens: Array, encoded: Array, *,
                         cache_length: int) -> State:
    """State for the inputs `[B, S]` given the target's encoder output `encoded` `[B, S, emb]`."""


def reads_target_encoder(draft: Any) -> bool:
  return isinstance(draft, TargetEncoderDraft)


def check_pair(target: Any, draft: Any) -> None:
  """Checks that `draft` can propose for `target` (vocabularies; a shared encoder's shape)."""
  if draft.vocab_size != target.vocab_size:
    raise ValueError(f"draft and target vocabularies differ: draft.vocab_size="
                     f"{draft.vocab_size}, target.vocab_size={target.vocab_size}")
  if reads_target_encoder(draft):
    if not isinstance(target, EncodingTarget):
      raise TypeError(f"draft {type(draft).__name__} reads the target's encoder output, but the "
                      f"target ({type(target).__name__}) has no `encode` method")
    draft.check_target(target)


def start_pair(target: Any, draft: Any, encoder_input_tokens: Array, *,
               cache_length: int) -> tuple[State, State]:
  """Both models' states for one batch of inputs; the input is encoded once by the target, and
  a `TargetEncoderDraft` starts from that encoding."""
  if reads_target_encoder(draft):
    encoded = target.encode(encoder_input_tokens)
    return (target.start(encoder_input_tokens, cache_length=cache_length, encoded=encoded),
            draft.start_from_encoded(encoder_input_tokens, encoded, cache_length=cache_length))
  return (target.start(encoder_input_tokens, cache_length=cache_length),
          draft.start(encoder_input_tokens, cache_length=cache_length))


def check_draft(obj: Any, *, name: str = "draft") -> None:
  if not isinstance(obj, Draft):
    raise TypeError(f"{name} must implement specdec.drafts.Draft (vocab_size, start, extend, "
                    f"rewind), got {type(obj).__name__}")


@flax.struct.dataclass
class PositionState:
  position: Array  # [B] int32; decoder tokens consumed per row.


@flax.struct.dataclass
class UnigramDraft:
  """Proposes every token from one fixed distribution (the paper's unigram draft)."""
  log_probs: Array  # [V] float32.

  @classmethod
  def fit(cls, sequences: Iterable[Any], *, vocab_size: int, smoothing: float = 1.0,
          ) -> "UnigramDraft":
    """Token frequencies of target sequences (pad 0 ignored), add-`smoothing`."""
    counts = np.full((vocab_size,), smoothing, np.float64)
    for seq in sequences:
      seq = np.asarray(seq).reshape(-1)
      np.add.at(counts, seq[seq > 0], 1.0)
    return cls(log_probs=jnp.asarray(np.log(counts / counts.sum()), jnp.float32))

  @property
  def vocab_size(self) -> int:
    return self.log_probs.shape[0]

  def start(self, encoder_input_tokens, *, cache_length):
    return PositionState(jnp.zeros((encoder_input_tokens.shape[0],), jnp.int32))

  def extend(self, state, tokens):
    logits = jnp.broadcast_to(self.log_probs, tokens.shape + self.log_probs.shape)
    return logits, PositionState(state.position + tokens.shape[1])

  def rewind(self, state, position):
    return PositionState(position.astype(jnp.int32))


@flax.struct.dataclass
class BigramDraft:
  """Proposes the next token from the previous one (the paper's bigram draft)."""
  log_probs: Array  # [V, V] float32; row a is the distribution of the token after a.

  @classmethod
  def fit(cls, sequences: Iterable[Any], *, vocab_size: int, smoothing: float = 0.1,
          ) -> "BigramDraft":
    """Bigram counts of target sequences as the decoder sees them: 0 first, pad 0 ignored."""
    counts = np.full((vocab_size, vocab_size), smoothing, np.float64)
    for seq in sequences:
      seq = np.asarray(seq).reshape(-1)
      seq = np.concatenate([[0], seq[seq > 0]])
      np.add.at(counts, (seq[:-1], seq[1:]), 1.0)
    totals = counts.sum(1, keepdims=True)
    # A token never seen as a predecessor (possible when smoothing = 0) gets a uniform row.
    probs = np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), 1.0 / vocab_size)
    return cls(log_probs=jnp.asarray(np.log(probs), jnp.float32))

  @property
  def vocab_size(self) -> int:
    return self.log_probs.shape[0]

  def start(self, encoder_input_tokens, *, cache_length):
    return PositionState(jnp.zeros((encoder_input_tokens.shape[0],), jnp.int32))

  def extend(self, state, tokens):
    return self.log_probs[tokens], PositionState(state.position + tokens.shape[1])

  def rewind(self, state, position):
    return PositionState(position.astype(jnp.int32))


@flax.struct.dataclass
class PromptLookupState:
  history: Array   # [B, L] int32; decoder tokens consumed so far (history[:, 0] is the start 0).
  position: Array  # [B] int32.
  encoder: Array   # [B, S] int32; the encoder input tokens (0 = padding).


@flax.struct.dataclass
class PromptLookupDraft:
  """Copies from the encoder input: finds the latest occurrence of the last `max_ngram` (down to 1)
  decoded tokens in the input and proposes the token that follows it; q is one-hot.

  With no match it proposes `fallback_token`. Costs no FLOPs worth the name, and shines on
  tasks whose outputs copy their inputs (summarization, editing).
  """
  vocab_size: int = flax.struct.field(pytree_node=False)
  max_ngram: int = flax.struct.field(pytree_node=False, default=3)
  fallback_token: int = flax.struct.field(pytree_node=False, default=1)

  def start(self, encoder_input_tokens, *, cache_length):
    batch = encoder_input_tokens.shape[0]
    return PromptLookupState(history=jnp.zeros((batch, cache_length), jnp.int32),
                             position=jnp.zeros((batch,), jnp.int32),
                             encoder=encoder_input_tokens.astype(jnp.int32))

  def extend(self, state, tokens):
    history = write_rows(state.history, tokens.astype(jnp.int32), state.position)
    ends = state.position[:, None] + jnp.arange(tokens.shape[1])[None, :]  # [B, k]
    proposal = jax.vmap(jax.vmap(self._propose, (None, None, 0)), (0, 0, 0))(
        history, state.encoder, ends)  # [B, k]
    logits = jnp.where(jax.nn.one_hot(proposal, self.vocab_size, dtype=bool), 0.0, -jnp.inf)
    return logits.astype(jnp.float32), state.replace(history=history,
                                                     position=state.position + tokens.shape[1])

  def rewind(self, state, position):
    return state.replace(position=position.astype(jnp.int32))

  def _propose(self, history: Array, encoder: Array, end: Array) -> Array:
    """history `[L]`, encoder `[S]`, the last consumed position `end` → the proposed token."""
    length = encoder.shape[0]
    starts = jnp.arange(length)
    proposal = jnp.int32(self.fallback_token)
    for n in range(1, self.max_ngram + 1):  # Longer n-grams are checked last and win.
      suffix = jax.lax.dynamic_slice_in_dim(history, jnp.maximum(end - n + 1, 0), n)
      # match[j]: encoder[j : j+n] == suffix, and encoder[j+n] exists and is a real token.
      window = jnp.stack([jnp.roll(encoder, -i) for i in range(n)], axis=1)  # [S, n]
      follower = jnp.roll(encoder, -n)
      match = (jnp.all(window == suffix[None, :], axis=1) & (starts + n < length)
               & (follower > 0) & (end - n + 1 >= 1))  # Never match on the start token.
      latest = jnp.max(jnp.where(match, starts, -1))
      proposal = jnp.where(latest >= 0, follower[jnp.maximum(latest, 0)], proposal)
    return proposal
