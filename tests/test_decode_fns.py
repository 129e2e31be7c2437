"""The T5X-style decode functions through `EncoderDecoderModel.predict_batch`.

`temperature_sample` / `speculative_sample` take T5X's argument names (`decode_rng`,
`num_decodes`, `topk`, `topp`, `max_decode_steps`) and return `[B, num_decodes, L]`. Checked
here: the copies of a row come in order (row b's copy j is row b·num_decodes + j of the repeated
batch, with that row's key), sampled copies are independent draws, the sampling arguments reach
the decoder, `aux` carries the speculative stats, and bad calls raise before anything is traced.

Statistics: the first tokens of 2 × 10000 sampled copies against the exactly known law of the
first token (float64 numpy, `specdec.testing`), fixed seeds, p-value > 1e-4 (a correct decoder
fails with probability 1e-4 per statistic for a fresh seed); the laws with one sampling argument
dropped are rejected at p < 1e-10 by the same samples (the power of the pass-through check).
"""

import functools

import jax
import numpy as np
import pytest

import specdec
from chi2 import chi2_pvalue
from specdec import models
from specdec.decode_fns import speculative_sample, temperature_sample  # The one place naming their module.
from specdec.testing import SMALL, SMALL_DRAFT, exact_conditionals

P_MIN = 1e-4
ROWS = 10000  # Identical prompts, each decoded NUM_DECODES times.
NUM_DECODES = 2
PROMPT = [6, 2, 5, 3]
# Every argument changes the law of the first token: without top-k it has 5 tokens, without
# top-p 4, at T = 1 another 2-token law (see test_sampling_arguments_reach_the_decoder).
SAMPLING = dict(temperature=2.0, topk=4, topp=0.7)

DECODE_FNS = {
    "temperature_sample": temperature_sample,
    "speculative_sample": functools.partial(speculative_sample, gamma=2),  # As gin binds it.
}


@pytest.fixture(scope="module")
def small_pair():
  return specdec.T5Model.init(SMALL, 0), specdec.T5Model.init(SMALL_DRAFT, 1)


def first_token_law(target, temperature, topk, topp):
  return exact_conditionals(target, PROMPT, length=1, temperature=temperature, top_k=topk,
                            top_p=topp)[0]


@pytest.fixture(scope="module", params=list(DECODE_FNS))
def sampled(request, small_pair):
  """(name, first tokens `[ROWS, NUM_DECODES]`, aux) of one decode function through
  `predict_batch_with_aux`, with `SAMPLING` passed as T5X passes decoder params."""
  target, draft = small_pair
  model = models.EncoderDecoderModel(target.config, decode_fn=DECODE_FNS[request.param],
                                     draft=draft)
  batch = {"encoder_input_tokens": np.tile(np.asarray([PROMPT], np.int32), (ROWS, 1)),
           "decoder_input_tokens": np.zeros((ROWS, 1), np.int32)}
  decodes, aux = model.predict_batch_with_aux(
      target.params, batch, jax.random.PRNGKey(17), num_decodes=NUM_DECODES,
      return_all_decodes=True, decoder_params=SAMPLING)
  decodes = np.asarray(decodes)
  assert decodes.shape == (ROWS, NUM_DECODES, 1) and decodes.dtype == np.int32
  return request.param, decodes[:, :, 0], aux


def test_sampled_copies_follow_the_law(small_pair, sampled):
  name, first, _ = sampled
  law = first_token_law(small_pair[0], **SAMPLING)
  for j in range(NUM_DECODES):
    pvalue = chi2_pvalue(np.bincount(first[:, j], minlength=SMALL.vocab_size), law)
    assert pvalue > P_MIN, (name, j, pvalue)


def test_sampled_copies_are_independent(small_pair, sampled):
  """The pair (copy 0, copy 1) of a row ~ law ⊗ law: copies are independent draws, not one
  draw repeated (which would put all mass on the diagonal) nor draws sharing randomness."""
  name, first, _ = sampled
  law = first_token_law(small_pair[0], **SAMPLING)
  pairs = np.bincount(first[:, 0] * SMALL.vocab_size + first[:, 1],
                      minlength=SMALL.vocab_size ** 2)
  pvalue = chi2_pvalue(pairs, np.outer(law, law))
  assert pvalue > P_MIN, (name, pvalue)
  # Power: copies that were one draw would be rejected by the same statistic.
  same = np.bincount(first[:, 0] * (SMALL.vocab_size + 1), minlength=SMALL.vocab_size ** 2)
  assert chi2_pvalue(same, np.outer(law, law)) < 1e-10


def test_sampling_arguments_reach_the_decoder(small_pair, sampled):
  """The samples follow law(T, topk, topp), and are rejected against the law with any one of
  the three left out: each argument reached the decoder."""
  name, first, _ = sampled
  counts = np.bincount(first.ravel(), minlength=SMALL.vocab_size)
  target = small_pair[0]
  assert chi2_pvalue(counts, first_token_law(target, **SAMPLING)) > P_MIN
  for dropped in (dict(temperature=1.0), dict(topk=0), dict(topp=1.0)):
    wrong = first_token_law(target, **{**SAMPLING, **dropped})
    assert chi2_pvalue(counts, wrong) < 1e-10, (name, dropped)


def test_aux(sampled):
  name, _, aux = sampled
  if name == "temperature_sample":
    assert aux == {}
    return
  stats = aux["stats"]
  for field in ("target_calls", "draft_calls", "drafted", "accepted", "rejected"):
    assert np.asarray(getattr(stats, field)).shape == (ROWS * NUM_DECODES,), field
  # One token to decode: one target pass per copy, and the γ = 2 bound on what is kept.
  np.testing.assert_array_equal(stats.target_calls, 1)
  np.testing.assert_array_equal(stats.drafted, 2)
  accepted = np.asarray(stats.accepted)
  assert accepted.max() <= 2 and 0 < (accepted > 0).mean() < 1


# --- order of the copies, and the decoders' own results ---------------------------------------

ENC = np.array([[3, 4, 5, 1], [6, 7, 1, 0]], np.int32)
LENGTH = 6


@pytest.mark.parametrize("name", list(DECODE_FNS))
def test_copies_come_in_row_order(tiny_target, tiny_draft, name):
  """Greedy: every copy of row b is the decoder's row b (so copies are grouped by row, as T5X
  returns them); the stats in aux are those of the repeated batch, row b·k + j for copy j."""
  model = models.EncoderDecoderModel(tiny_target.config, decode_fn=DECODE_FNS[name],
                                     draft=tiny_draft)
  batch = {"encoder_input_tokens": ENC, "decoder_input_tokens": np.zeros((2, LENGTH), np.int32)}
  decodes, aux = model.predict_batch_with_aux(tiny_target.params, batch, num_decodes=3,
                                              return_all_decodes=True)
  want = np.asarray(specdec.generate(tiny_target, ENC, max_decode_len=LENGTH).tokens)
  assert (want[0] != want[1]).any()  # The rows differ, so an interleaved order would show.
  np.testing.assert_array_equal(decodes, np.repeat(want[:, None], 3, axis=1))
  np.testing.assert_array_equal(model.predict_batch(tiny_target.params, batch, num_decodes=3),
                                want)  # Without return_all_decodes: the first copy.
  if name == "speculative_sample":
    direct = specdec.speculative_generate(tiny_target, tiny_draft, np.repeat(ENC, 3, axis=0),
                                          gamma=2, max_decode_len=LENGTH)
    for field in ("target_calls", "accepted", "rejected"):
      np.testing.assert_array_equal(getattr(aux["stats"], field),
                                    getattr(direct.stats, field), err_msg=field)


@pytest.mark.parametrize("name", list(DECODE_FNS))
def test_sampled_copies_are_rows_of_the_repeated_batch(tiny_target, tiny_draft, name):
  """Sampled: copy j of row b is row b·k + j of the decoder run on the repeated batch with the
  same key (so its randomness is fold_in(rng, b·k + j))."""
  model = models.EncoderDecoderModel(tiny_target.config, decode_fn=DECODE_FNS[name],
                                     draft=tiny_draft)
  batch = {"encoder_input_tokens": ENC, "decoder_input_tokens": np.zeros((2, LENGTH), np.int32)}
  rng = jax.random.PRNGKey(5)
  decodes = model.predict_batch(tiny_target.params, batch, rng, num_decodes=3,
                                return_all_decodes=True, decoder_params=dict(temperature=1.5))
  repeated = np.repeat(ENC, 3, axis=0)
  if name == "temperature_sample":
    want = specdec.generate(tiny_target, repeated, max_decode_len=LENGTH, temperature=1.5,
                            rng=rng).tokens
  else:
    want = specdec.speculative_generate(tiny_target, tiny_draft, repeated, gamma=2,
                                        max_decode_len=LENGTH, temperature=1.5, rng=rng).tokens
  np.testing.assert_array_equal(decodes, np.asarray(want).reshape(2, 3, LENGTH))
  assert len({tuple(copy) for copy in np.asarray(decodes)[0]}) > 1  # Copies differ.


# --- bad calls ---------------------------------------------------------------------------------


@pytest.fixture
def no_tracing(monkeypatch):
  """Fails the test if a decoder gets as far as its jitted function."""
  from specdec import decoding, speculative  # pylint: disable=g-import-not-at-top

  def traced(*args, **kwargs):
    raise AssertionError("reached tracing with bad input")
  monkeypatch.setattr(decoding, "_generate", traced)
  monkeypatch.setattr(speculative, "_speculative_generate", traced)


def test_speculative_sample_needs_a_draft(tiny_target, no_tracing):
  model = models.EncoderDecoderModel(tiny_target.config, decode_fn=DECODE_FNS["speculative_sample"])
  with pytest.raises(ValueError, match="draft"):
    model.predict_batch(tiny_target.params, {"encoder_input_tokens": ENC})


@pytest.mark.parametrize("num_decodes", [0, -1, 2.0, True, None])
@pytest.mark.parametrize("name", list(DECODE_FNS))
def test_bad_num_decodes(tiny_target, tiny_draft, no_tracing, name, num_decodes):
  model = models.EncoderDecoderModel(tiny_target.config, decode_fn=DECODE_FNS[name],
                                     draft=tiny_draft)
  with pytest.raises(ValueError, match="num_decodes"):
    model.predict_batch(tiny_target.params, {"encoder_input_tokens": ENC},
                        num_decodes=num_decodes)


def test_bad_batch(tiny_target):
  model = models.EncoderDecoderModel(tiny_target.config)
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    model.predict_batch(tiny_target.params, {"inputs": ENC})
  with pytest.raises(TypeError, match="config"):
    models.EncoderDecoderModel({"vocab_size": 32})
