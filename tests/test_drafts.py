"""Tests for the drafts: fitted unigram/bigram tables, prompt lookup, and the Draft protocol."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.struct  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import specdec  # noqa: E402
from specdec import BigramDraft, Draft, PromptLookupDraft, UnigramDraft  # noqa: E402
from specdec import cache as cache_lib  # noqa: E402
from specdec.drafts import check_draft  # noqa: E402

V = 6
CORPUS = [np.array([3, 4, 3, 0, 0]), [4, 1]]  # Pad 0 is ignored.


@pytest.mark.filterwarnings("ignore:divide by zero")  # log(0) = -inf is intended.
def test_unigram_fit_frequencies():
  draft = UnigramDraft.fit(CORPUS, vocab_size=V, smoothing=0.0)
  want = np.array([0, 1, 0, 2, 2, 0]) / 5.0
  np.testing.assert_allclose(np.exp(np.asarray(draft.log_probs)), want, atol=1e-6)
  smoothed = UnigramDraft.fit(CORPUS, vocab_size=V, smoothing=1.0)
  np.testing.assert_allclose(np.exp(np.asarray(smoothed.log_probs)),
                             (np.array([0, 1, 0, 2, 2, 0]) + 1.0) / 11.0, rtol=1e-6)
  assert draft.vocab_size == V and draft.log_probs.dtype == jnp.float32


@pytest.mark.filterwarnings("ignore:divide by zero")  # log(0) = -inf is intended.
def test_bigram_fit_frequencies():
  # As the decoder sees them: [0, 3, 4, 3] and [0, 4, 1] → pairs 0→3, 3→4, 4→3, 0→4, 4→1.
  counts = np.zeros((V, V))
  for a, b in [(0, 3), (3, 4), (4, 3), (0, 4), (4, 1)]:
    counts[a, b] += 1
  s = 0.5
  draft = BigramDraft.fit(CORPUS, vocab_size=V, smoothing=s)
  want = (counts + s) / (counts + s).sum(axis=1, keepdims=True)
  np.testing.assert_allclose(np.exp(np.asarray(draft.log_probs)), want, rtol=1e-6)
  assert draft.vocab_size == V
  # Row 3 without smoothing is one-hot on 4; row 0 splits between 3 and 4.
  bare = np.exp(np.asarray(BigramDraft.fit(CORPUS, vocab_size=V, smoothing=0.0).log_probs))
  np.testing.assert_allclose(bare[3], np.eye(V)[4], atol=1e-6)
  np.testing.assert_allclose(bare[0], (np.eye(V)[3] + np.eye(V)[4]) / 2, atol=1e-6)
  # A token never seen as a predecessor (5) has no counts: a uniform row, not NaN.
  np.testing.assert_allclose(bare[5], np.full(V, 1.0 / V), rtol=1e-6)


def test_unigram_and_bigram_extend_rewind():
  uni = UnigramDraft.fit(CORPUS, vocab_size=V)
  bi = BigramDraft.fit(CORPUS, vocab_size=V)
  enc = jnp.ones((2, 3), jnp.int32)
  tokens = jnp.asarray([[0, 3, 4], [0, 4, 1]], jnp.int32)
  for draft in (uni, bi):
    state = draft.start(enc, cache_length=8)
    np.testing.assert_array_equal(state.position, [0, 0])
    logits, state = draft.extend(state, tokens)
    assert logits.shape == (2, 3, V) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(state.position, [3, 3])
    state = draft.rewind(state, jnp.asarray([1, 2]))
    np.testing.assert_array_equal(state.position, [1, 2])
  np.testing.assert_allclose(bi.extend(bi.start(enc, cache_length=8), tokens)[0],
                             np.asarray(bi.log_probs)[np.asarray(tokens)])
  np.testing.assert_allclose(uni.extend(uni.start(enc, cache_length=8), tokens)[0][1, 2],
                             uni.log_probs)


# --- prompt lookup ---------------------------------------------------------------------------

#                       j: 0  1  2  3  4  5  6  7
ENCODER = jnp.asarray([[2, 5, 6, 7, 3, 6, 9, 0]], jnp.int32)  # "6" twice; "5 6" once; pad 0.
VP = 12  # Vocabulary of the prompt-lookup examples.


_extend = jax.jit(lambda draft, state, tokens: draft.extend(state, tokens))
BLOCK = 4  # Every lookup feeds one block of this length: one compile per draft setting.


def propose(history, *, max_ngram=3, fallback_token=1, encoder=ENCODER):
  """The proposal after the decoder inputs `history` (starting with 0).

  The history is fed in one block padded with filler to BLOCK tokens; the proposal at index i
  may only depend on tokens 0..i, so the filler after it must not matter.
  """
  draft = PromptLookupDraft(vocab_size=VP, max_ngram=max_ngram, fallback_token=fallback_token)
  state = draft.start(encoder, cache_length=16)
  block = list(history) + [6] * (BLOCK - len(history))
  logits, state = _extend(draft, state, jnp.asarray([block], jnp.int32))
  assert logits.shape == (1, BLOCK, VP) and logits.dtype == jnp.float32
  np.testing.assert_array_equal(state.position, [BLOCK])
  last = np.asarray(logits[0, len(history) - 1])
  # One-hot logits: 0 at the proposal, -inf elsewhere (q is one-hot).
  assert np.sum(last == 0.0) == 1 and np.all(np.isneginf(last[last != 0.0]))
  return int(np.argmax(last))


def test_prompt_lookup_proposals():
  assert propose([0, 4, 6]) == 9            # Latest of the two "6"s (j = 5) → 9, not 7.
  assert propose([0, 5, 6]) == 7            # The 2-gram "5 6" (j = 1) beats the later 1-gram.
  assert propose([0, 5, 6], max_ngram=1) == 9
  assert propose([0, 3, 8]) == 1            # "8" not in the input: the fallback token.
  assert propose([0, 3, 8], fallback_token=4) == 4
  assert propose([0, 2]) == 5
  assert propose([0, 9]) == 1               # "9" is followed by padding only: no match.
  assert propose([0]) == 1                  # The start token 0 never matches (not even pad).
  assert propose([0, 7, 3, 6]) == 9         # The 3-gram "7 3 6" (j = 3).


def test_prompt_lookup_proposes_at_every_position():
  draft = PromptLookupDraft(vocab_size=VP)
  state = draft.start(ENCODER, cache_length=16)
  logits, _ = _extend(draft, state, jnp.asarray([[0, 2, 5, 6, 7]], jnp.int32))
  # After 0: fallback; after 2 → 5; after "2 5" → 6; after "2 5 6" → 7; after "5 6 7" → 3.
  np.testing.assert_array_equal(np.argmax(np.asarray(logits[0]), axis=-1), [1, 5, 6, 7, 3])


def test_prompt_lookup_extend_rewind():
  draft = PromptLookupDraft(vocab_size=VP)
  encoder = jnp.concatenate([ENCODER, jnp.asarray([[4, 6, 8, 3, 6, 9, 0, 0]])], axis=0)
  state = draft.start(encoder, cache_length=16)
  _, state = _extend(draft, state, jnp.asarray([[0, 5, 6], [0, 3, 6]], jnp.int32))
  np.testing.assert_array_equal(state.position, [3, 3])
  _, state = _extend(draft, state, jnp.asarray([[7, 3], [9, 4]], jnp.int32))  # Advances by 2.
  np.testing.assert_array_equal(state.position, [5, 5])
  # Rewind the rows to different positions, then feed two tokens.
  state = draft.rewind(state, jnp.asarray([2, 1]))
  logits, state = _extend(draft, state, jnp.asarray([[6, 7], [4, 6]], jnp.int32))
  np.testing.assert_array_equal(state.position, [4, 3])
  got = np.argmax(np.asarray(logits), axis=-1)
  # Row 0 holds [0, 5, 6, 7]: "5 6" → 7, "5 6 7" → 3. Row 1 holds [0, 4, 6]: "4" → 6,
  # "4 6" → 8 (with the stale "3 6" of before the rewind it would be 9).
  np.testing.assert_array_equal(got, [[7, 3], [6, 8]])
  # The same as a fresh state fed only the surviving prefix.
  fresh, _ = _extend(draft, draft.start(encoder, cache_length=16),
                          jnp.asarray([[0, 5, 6, 7], [0, 4, 6, 0]], jnp.int32))
  np.testing.assert_array_equal(got[0], np.argmax(np.asarray(fresh[0, 2:]), axis=-1))
  np.testing.assert_array_equal(got[1], np.argmax(np.asarray(fresh[1, 1:3]), axis=-1))


def test_prompt_lookup_on_an_all_padding_row():
  """A row with no input at all (every token padding) matches nothing: always the fallback,
  whatever the history (padding is never a token to match or to propose)."""
  encoder = jnp.concatenate([ENCODER, jnp.zeros_like(ENCODER)], axis=0)
  draft = PromptLookupDraft(vocab_size=VP, fallback_token=4)
  state = draft.start(encoder, cache_length=16)
  logits, _ = _extend(draft, state, jnp.asarray([[0, 2, 5, 6], [0, 2, 5, 6]], jnp.int32))
  got = np.argmax(np.asarray(logits), axis=-1)
  np.testing.assert_array_equal(got[1], [4, 4, 4, 4])
  np.testing.assert_array_equal(got[0], [4, 5, 6, 7])  # The other row is unaffected.
  assert propose([0, 0, 0], encoder=jnp.zeros_like(ENCODER)) == 1


def test_prompt_lookup_with_eos_and_padding_mid_input():
  """EOS (1) inside the input is an ordinary token; padding inside it is never matched or
  proposed, and an occurrence followed by padding yields to an earlier one with a follower."""
  #                    j: 0  1  2  3  4  5  6  7
  encoder = jnp.asarray([[4, 0, 6, 1, 9, 1, 0, 0]], jnp.int32)
  assert propose([0], encoder=encoder, fallback_token=3) == 3     # 0 never matches the pad at 1.
  assert propose([0, 4], encoder=encoder, fallback_token=3) == 3  # "4" is followed by padding.
  assert propose([0, 6], encoder=encoder) == 1                    # EOS is proposed like a token.
  assert propose([0, 1], encoder=encoder) == 9                    # Latest "1" (j=5) → pad; j=3.
  assert propose([0, 6, 1], encoder=encoder) == 9                 # The 2-gram "6 1".


# --- capacity: a write past the end of a cache is an error, never a clamp -----------------------


def test_write_rows_fills_to_the_end_and_refuses_past_it():
  buffer = jnp.zeros((2, 5), jnp.int32)
  block = jnp.asarray([[7, 8], [9, 6]], jnp.int32)
  got = cache_lib.write_rows(buffer, block, jnp.asarray([3, 0]))  # Row 0 ends at the last entry.
  np.testing.assert_array_equal(got, [[0, 0, 0, 7, 8], [9, 6, 0, 0, 0]])
  np.testing.assert_array_equal(cache_lib.read_rows(got, jnp.asarray([3, 0]), 2), block)
  for start, row in (([3, 4], 1), ([-1, 0], 0), ([5, 5], 0)):
    with pytest.raises(ValueError, match=f"start: row {row} would write"):
      cache_lib.write_rows(buffer, block, jnp.asarray(start))
    with pytest.raises(ValueError, match=f"start: row {row} would read"):
      cache_lib.read_rows(buffer, jnp.asarray(start), 2)
  with pytest.raises(ValueError, match="block of 6 entries in a cache of length 5"):
    cache_lib.write_rows(buffer, jnp.zeros((2, 6), jnp.int32), jnp.asarray([0, 0]))
  with pytest.raises(ValueError, match="block of 6 entries in a cache of length 5"):
    jax.jit(cache_lib.read_rows, static_argnums=2)(buffer, jnp.asarray([0, 0]), 6)  # Static.
  # Traced positions are not inspected (the decoders' allocation guarantees them; see
  # test_speculative.py::test_writes_stay_inside_the_caches): in range, jit gives the same.
  np.testing.assert_array_equal(jax.jit(cache_lib.write_rows)(buffer, block, jnp.asarray([3, 0])),
                                got)


def test_write_rows_along_a_later_axis():
  """`axis`: the block's positions run along that axis of the buffer (the keys' last axis in a
  `DecoderCache`); same replace semantics and the same capacity check, on that axis."""
  buffer = jnp.zeros((2, 3, 5), jnp.int32)
  block = jnp.arange(12, dtype=jnp.int32).reshape(2, 3, 2) + 1
  got = np.asarray(cache_lib.write_rows(buffer, block, jnp.asarray([3, 1]), axis=2))
  want = np.zeros((2, 3, 5), np.int32)
  want[0, :, 3:5], want[1, :, 1:3] = np.asarray(block[0]), np.asarray(block[1])
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="start: row 0 would write entries 4..5 of a cache of "
                                       "length 5"):
    cache_lib.write_rows(buffer, block, jnp.asarray([4, 0]), axis=2)
  with pytest.raises(ValueError, match="block of 6 entries in a cache of length 5"):
    cache_lib.write_rows(buffer, jnp.zeros((2, 3, 6), jnp.int32), jnp.asarray([0, 0]), axis=2)


def test_drafts_refuse_to_write_past_their_cache(tiny_target):
  """Eager calls know the positions: a block that would run past `cache_length` raises,
  naming the row, for prompt lookup's history and for a T5's decoder cache."""
  draft = PromptLookupDraft(vocab_size=VP)
  state = draft.start(ENCODER, cache_length=4)
  logits, state = draft.extend(state, jnp.asarray([[0, 2, 5]], jnp.int32))
  logits, state = draft.extend(state, jnp.asarray([[6]], jnp.int32))  # Fills the last entry.
  assert int(np.argmax(np.asarray(logits[0, 0]))) == 7  # "2 5 6" → 7: the write landed.
  with pytest.raises(ValueError, match="start: row 0 would write entries 4..4"):
    draft.extend(state, jnp.asarray([[7]], jnp.int32))
  rewound = draft.rewind(state, jnp.asarray([3]))
  draft.extend(rewound, jnp.asarray([[7]], jnp.int32))  # After a rewind there is room again.

  enc = jnp.asarray([[5, 9, 3, 1]], jnp.int32)
  cache = tiny_target.start(enc, cache_length=3)
  _, cache = tiny_target.extend(cache, jnp.asarray([[0, 4]], jnp.int32))
  with pytest.raises(ValueError, match="start: row 0 would write entries 2..3"):
    tiny_target.extend(cache, jnp.asarray([[5, 6]], jnp.int32))
  _, cache = tiny_target.extend(cache, jnp.asarray([[5]], jnp.int32))
  np.testing.assert_array_equal(cache.position, [3])


def test_drafts_satisfy_the_protocol(tiny_target):
  for draft in (UnigramDraft.fit(CORPUS, vocab_size=V), BigramDraft.fit(CORPUS, vocab_size=V),
                PromptLookupDraft(vocab_size=V), tiny_target):
    assert isinstance(draft, Draft)
    check_draft(draft)
  for not_a_draft in ("draft", {"vocab_size": 32}, 3, None, jnp.zeros(4)):
    with pytest.raises(TypeError, match="draft"):
      check_draft(not_a_draft)


# --- anyone can implement a draft ------------------------------------------------------------


@flax.struct.dataclass
class _RepeatState:
  last: jax.Array      # [B, L] int32; consumed tokens.
  position: jax.Array  # [B] int32.


@flax.struct.dataclass
class RepeatDraft:
  """A custom draft written against the protocol only: proposes the last token again, with
  probability `stay`, and spreads the rest uniformly (so q is not one-hot)."""
  vocab_size: int = flax.struct.field(pytree_node=False)
  stay: float = 0.7

  def start(self, encoder_input_tokens, *, cache_length):
    batch = encoder_input_tokens.shape[0]
    return _RepeatState(jnp.zeros((batch, cache_length), jnp.int32), jnp.zeros((batch,), jnp.int32))

  def extend(self, state, tokens):
    rest = (1.0 - self.stay) / (self.vocab_size - 1)
    probs = jnp.where(jax.nn.one_hot(tokens, self.vocab_size, dtype=bool), self.stay, rest)
    return jnp.log(probs).astype(jnp.float32), state.replace(position=state.position
                                                             + tokens.shape[1])

  def rewind(self, state, position):
    return state.replace(position=position.astype(jnp.int32))


def test_custom_draft_in_speculative_generate(tiny_target):
  draft = RepeatDraft(vocab_size=tiny_target.vocab_size)
  assert isinstance(draft, Draft)
  enc = jnp.asarray(np.random.default_rng(0).integers(2, 32, (4, 6)), jnp.int32)
  want = specdec.generate(tiny_target, enc, max_decode_len=10, eos_id=None).tokens
  got = specdec.speculative_generate(tiny_target, draft, enc, gamma=3, max_decode_len=10,
                                     eos_id=None)
  np.testing.assert_array_equal(got.tokens, want)
  stats = got.stats
  np.testing.assert_array_equal(stats.drafted, 3 * stats.target_calls)
  # Tiny random T5s tend to repeat their last token, so a repeat draft gets some accepted.
  assert int(stats.accepted.sum()) > 0
