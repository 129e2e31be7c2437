"""`generate` and the sampling helpers: exact sampling distributions, greedy = argmax of teacher
forcing, EOS handling, per-row independence, and bad input rejected before tracing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from chi2 import chi2_pvalue
from conftest import TINY
from specdec import decoding, validation
from specdec import sampling as sampling_lib
from specdec.sampling import Sampling, logits_to_probs
from specdec.testing import SMALL, exact_joint, reference_probs

# --- exact sampling distributions ----------------------------------------------------------

_NUM_SAMPLES = 20000
_PROMPT = np.array([[7, 3, 19, 4, 25, 0]], np.int32)
# A chi-squared p-value is uniform on [0, 1] when the sampler is exact, so with a *random* seed
# the test would fail wrongly with probability 1e-4 per case; with the fixed seed below it is
# deterministic. A real error (a temperature applied twice, a mis-normalised or off-by-one
# top-p/top-k, rows sharing keys) moves the distribution by far more than the ~1% that 20000
# samples resolve, which drives p to ~0 (see test_chi_squared_has_power).
_P_THRESHOLD = 1e-4


def _first_token_probs(model):
  logits = model.logits(_PROMPT, np.zeros((1, 1), np.int32))
  return np.asarray(logits[0, 0])


def _sample_first_tokens(model, seed, **sampling):
  prompts = np.repeat(_PROMPT, _NUM_SAMPLES, axis=0)
  result = specdec.generate(model, prompts, max_decode_len=1, rng=jax.random.PRNGKey(seed),
                            eos_id=None, **sampling)
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (_NUM_SAMPLES, 1) and tokens.dtype == np.int32
  return tokens[:, 0]


def _chi_squared_p(tokens, probs):
  """p-value of the counts of `tokens` against `probs` (bins with expected count < 5 pooled)."""
  return chi2_pvalue(np.bincount(tokens, minlength=len(probs)), probs)


_CASES = {
    "T=1": dict(temperature=1.0),
    "T=0.7": dict(temperature=0.7),
    "top_k=5": dict(temperature=1.0, top_k=5),
    "top_p=0.8": dict(temperature=1.0, top_p=0.8),
    "T=1.5,top_k=12,top_p=0.9": dict(temperature=1.5, top_k=12, top_p=0.9),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_first_token_distribution_is_exact(tiny_target, case):
  sampling = _CASES[case]
  logits = _first_token_probs(tiny_target)
  expected = reference_probs(logits, **sampling)
  # specdec's logits_to_probs agrees with the independent reference...
  np.testing.assert_allclose(logits_to_probs(jnp.asarray(logits), **sampling), expected,
                             atol=1e-6)
  support = expected > 0
  if "top_k" in sampling or "top_p" in sampling:
    assert 1 < support.sum() < TINY.vocab_size  # The truncation actually removes tokens.
  # ...and generate samples from it.
  tokens = _sample_first_tokens(tiny_target, seed=1234, **sampling)
  assert support[tokens].all(), "sampled a token outside the top-k / top-p set"
  p = _chi_squared_p(tokens, expected)
  assert p > _P_THRESHOLD, f"{case}: chi-squared p-value {p:.3g}"


def test_chi_squared_has_power(tiny_target):
  """The samples of T=0.7 (same compiled function and seed as above) are rejected against the
  T=1 and the T=0.6 distributions: the test detects errors of that size."""
  logits = _first_token_probs(tiny_target)
  tokens = _sample_first_tokens(tiny_target, seed=1234, temperature=0.7)
  assert _chi_squared_p(tokens, reference_probs(logits, temperature=1.0)) < 1e-10
  assert _chi_squared_p(tokens, reference_probs(logits, temperature=0.6)) < _P_THRESHOLD


_SMALL_PROMPT = np.array([[3, 5, 2, 7, 4]], np.int32)
_JOINT_CASES = {"T=1": dict(temperature=1.0),
                "T=0.7,top_k=4,top_p=0.8": dict(temperature=0.7, top_k=4, top_p=0.8)}


@pytest.fixture(scope="module")
def small_target():
  return specdec.T5Model.init(SMALL, 0)


def _sample_sequences(model, seed, **sampling):
  """`_NUM_SAMPLES` continuations of 3 tokens of `_SMALL_PROMPT`, as cell indices in V³."""
  prompts = np.repeat(_SMALL_PROMPT, _NUM_SAMPLES, axis=0)
  tokens = np.asarray(specdec.generate(model, prompts, max_decode_len=3, eos_id=None,
                                       rng=jax.random.PRNGKey(seed), **sampling).tokens)
  assert tokens.shape == (_NUM_SAMPLES, 3)
  return np.ravel_multi_index(tuple(tokens.T), (SMALL.vocab_size,) * 3)


@pytest.mark.parametrize("case", list(_JOINT_CASES))
def test_sequence_distribution_is_exact(small_target, case):
  """Several steps: (y_1, y_2, y_3) against their joint law enumerated by teacher forcing
  (512 cells), so each step must draw from the right conditional with its own randomness."""
  sampling = _JOINT_CASES[case]
  joint = exact_joint(small_target, _SMALL_PROMPT[0], length=3, **sampling)
  cells = _sample_sequences(small_target, seed=99, **sampling)
  p = chi2_pvalue(np.bincount(cells, minlength=joint.size), joint)
  assert p > _P_THRESHOLD, f"{case}: chi-squared p-value {p:.3g}"


def test_sequence_test_has_power(small_target, monkeypatch):
  """The same statistic rejects `generate` when every step reuses the step-0 key (each row's
  tokens then share one uniform): run through the real loop with `step_keys` monkeypatched."""
  joint = exact_joint(small_target, _SMALL_PROMPT[0], length=3, temperature=1.0)
  monkeypatch.setattr(sampling_lib, "step_keys", lambda keys, step: jax.vmap(
      lambda key: jax.random.fold_in(key, 0))(keys))
  decoding._generate.clear_cache()  # pylint: disable=protected-access
  try:
    cells = _sample_sequences(small_target, seed=99, temperature=1.0)
  finally:
    decoding._generate.clear_cache()  # pylint: disable=protected-access
  assert chi2_pvalue(np.bincount(cells, minlength=joint.size), joint) < 1e-10


def test_sampling_probs_uses_logits_to_probs():
  logits = jnp.asarray(np.random.RandomState(0).randn(3, 10), jnp.float32)
  got = Sampling(temperature=0.5, top_k=4, top_p=0.7).probs(logits)
  np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
  for row in range(3):
    np.testing.assert_allclose(
        got[row], reference_probs(logits[row], temperature=0.5, top_k=4, top_p=0.7), atol=1e-6)
  with pytest.raises(ValueError, match="temperature"):
    logits_to_probs(logits, temperature=0.0)


# --- greedy, EOS, independence ----------------------------------------------------------------

_PROMPTS = np.array([
    [5, 9, 3, 12, 7, 30, 4, 8],
    [11, 2, 0, 0, 0, 0, 0, 0],
    [6, 6, 6, 25, 17, 0, 0, 0],
    [31, 14, 22, 19, 2, 8, 13, 0],
], np.int32)


def test_greedy_is_argmax_of_teacher_forcing(tiny_target):
  length = 10
  tokens = np.asarray(specdec.generate(tiny_target, _PROMPTS, max_decode_len=length,
                                       eos_id=None).tokens)
  assert tokens.shape == (len(_PROMPTS), length) and tokens.dtype == np.int32
  decoder_inputs = np.concatenate([np.zeros((len(_PROMPTS), 1), np.int32), tokens[:, :-1]], 1)
  logits = np.asarray(tiny_target.logits(_PROMPTS, decoder_inputs))
  np.testing.assert_array_equal(tokens, logits.argmax(-1))
  # Greedy ignores rng: a key gives the same tokens.
  again = specdec.generate(tiny_target, _PROMPTS, max_decode_len=length, eos_id=None, rng=5)
  np.testing.assert_array_equal(again.tokens, tokens)


_BATCH = 64
_SAMPLED_LEN = 12


def _sampled_prompts():
  prompts = np.random.RandomState(3).randint(2, TINY.vocab_size, size=(_BATCH, 8))
  prompts[::3, 5:] = 0  # Some padded rows.
  return prompts.astype(np.int32)


def _sample(model, prompts, *, eos_id):
  return np.asarray(specdec.generate(model, prompts, max_decode_len=_SAMPLED_LEN,
                                     temperature=2.0, rng=jax.random.PRNGKey(7),
                                     eos_id=eos_id).tokens)


def test_outputs_are_zero_after_eos(tiny_target):
  prompts = _sampled_prompts()
  free = _sample(tiny_target, prompts, eos_id=None)
  ended = _sample(tiny_target, prompts, eos_id=1)
  eos_rows = [b for b in range(_BATCH) if (free[b, :-1] == 1).any()]
  assert len(eos_rows) >= 5  # Enough rows end early for the test to mean something.
  for b in range(_BATCH):
    hits = np.flatnonzero(free[b] == 1)
    if len(hits) == 0:
      np.testing.assert_array_equal(ended[b], free[b])
    else:  # Identical up to and including the first EOS, then zeros.
      first = hits[0]
      np.testing.assert_array_equal(ended[b, :first + 1], free[b, :first + 1])
      np.testing.assert_array_equal(ended[b, first + 1:], 0)


def test_rows_are_independent(tiny_target):
  prompts = _sampled_prompts()
  base = _sample(tiny_target, prompts, eos_id=None)
  changed_prompts = prompts.copy()
  changed_prompts[5] = [9, 9, 8, 8, 7, 7, 6, 6]
  changed = _sample(tiny_target, changed_prompts, eos_id=None)
  others = np.arange(_BATCH) != 5
  np.testing.assert_array_equal(changed[others], base[others])
  assert (changed[5] != base[5]).any()  # The changed row did see its new prompt.
  # Identical prompts in different rows are different samples (each row has its own key).
  same = _sample(tiny_target, np.repeat(prompts[:1], _BATCH, axis=0), eos_id=None)
  assert len({tuple(row) for row in same}) > _BATCH // 2


# --- bad input: a clear error before anything is traced -------------------------------------------


@pytest.fixture
def no_tracing(monkeypatch):
  """Fails the test if generate gets as far as its jitted function."""
  def traced(*args, **kwargs):
    raise AssertionError("generate reached tracing with bad input")
  monkeypatch.setattr(decoding, "_generate", traced)


_GOOD = np.array([[4, 5, 6]], np.int32)


@pytest.mark.parametrize("tokens, error", [
    (np.array([4, 5, 6], np.int32), ValueError),           # rank 1
    (np.array([[[4, 5, 6]]], np.int32), ValueError),       # rank 3
    (np.array([[4.0, 5.0, 6.0]], np.float32), TypeError),  # float dtype
    (np.array([[4, -1, 6]], np.int32), ValueError),        # id < 0
    (np.array([[4, TINY.vocab_size, 6]], np.int32), ValueError),  # id >= vocab_size
    (np.zeros((1, 0), np.int32), ValueError),              # empty
], ids=["rank1", "rank3", "float", "negative", "too_large", "empty"])
def test_bad_tokens(tiny_target, no_tracing, tokens, error):
  with pytest.raises(error, match="encoder_input_tokens"):
    specdec.generate(tiny_target, tokens, max_decode_len=4)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(max_decode_len=0), ValueError, "max_decode_len"),
    (dict(max_decode_len=-3), ValueError, "max_decode_len"),
    (dict(max_decode_len=2.5), TypeError, "max_decode_len"),
    (dict(max_decode_len=4, temperature=-0.1), ValueError, "temperature"),
    (dict(max_decode_len=4, temperature=float("nan")), ValueError, "temperature"),
    (dict(max_decode_len=4, temperature=1.0, rng=0, top_k=-1), ValueError, "top_k"),
    (dict(max_decode_len=4, temperature=1.0, rng=0, top_k=2.0), TypeError, "top_k"),
    (dict(max_decode_len=4, temperature=1.0, rng=0, top_p=0.0), ValueError, "top_p"),
    (dict(max_decode_len=4, temperature=1.0, rng=0, top_p=1.5), ValueError, "top_p"),
    (dict(max_decode_len=4, temperature=1.0, rng=0, top_p=-0.2), ValueError, "top_p"),
    (dict(max_decode_len=4, temperature=1.0), ValueError, "rng"),
    (dict(max_decode_len=4, temperature=1.0, rng="seed"), TypeError, "rng"),
    (dict(max_decode_len=4, eos_id=TINY.vocab_size), ValueError, "eos_id"),
    (dict(max_decode_len=4, eos_id=-1), ValueError, "eos_id"),
], ids=lambda x: str(x) if not isinstance(x, dict) else ",".join(f"{k}={v}" for k, v in x.items()))
def test_bad_arguments(tiny_target, no_tracing, kwargs, error, name):
  with pytest.raises(error, match=name):
    specdec.generate(tiny_target, _GOOD, **kwargs)


def test_bad_model(no_tracing):
  with pytest.raises(TypeError, match="model"):
    specdec.generate(object(), _GOOD, max_decode_len=4)


def test_good_arguments_reach_tracing(tiny_target, no_tracing):
  """The no_tracing guard is live: valid arguments get past validation into the jitted call."""
  with pytest.raises(AssertionError, match="reached tracing"):
    specdec.generate(tiny_target, _GOOD, max_decode_len=4, temperature=1.0, top_k=3,
                     top_p=0.5, rng=0)


def test_greedy_generate_traced_first_then_eager(tiny_target):
  """The cached key that greedy decoding passes along must not be a tracer when the first call
  to make it happens inside a user's `jit` (it leaked into every later call before)."""
  validation._unused_key.cache_clear()  # pylint: disable=protected-access
  prompts = jnp.asarray(_PROMPT)
  traced = jax.jit(lambda p: specdec.generate(tiny_target, p, max_decode_len=3).tokens)(prompts)
  eager = specdec.generate(tiny_target, _PROMPT, max_decode_len=3).tokens
  np.testing.assert_array_equal(traced, eager)
  assert not isinstance(validation._unused_key(), jax.core.Tracer)  # pylint: disable=protected-access
