"""Tests for `specdec.speculative_generate`: exactness, greedy identity, bookkeeping, errors.

Compile economy: the loop is jitted with (gamma, max_decode_len, sampling, eos_id) static and
the models' configs in the pytree structure, so every distinct (draft kind, γ, sampling, eos)
is one compile; the tests below keep batch shapes fixed and reuse those combinations.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from chi2 import chi2_pvalue  # noqa: E402  (tests/chi2.py)

import specdec  # noqa: E402
from specdec import BigramDraft, PromptLookupDraft, T5Model, UnigramDraft  # noqa: E402
from specdec import sampling as sampling_lib  # noqa: E402
from specdec import speculative as speculative_lib  # noqa: E402
from specdec import verification as verification_lib  # noqa: E402
from specdec.testing import (SMALL, SMALL_DRAFT, WriteRecorder, end_at_eos,  # noqa: E402
                             exact_conditionals, joint_from)

# --- exactness: a chi-squared test against the enumerated target distribution ----------------
#
# A batch of N identical prompts is N independent samples (row b draws from fold_in(rng, b)).
# With V = 8 and length 3 there are 512 continuations; the exact probability of each is the
# product of the target's teacher-forced conditionals, processed by temperature/top-k/top-p in
# float64 numpy (`specdec.testing`), independently of `specdec.sampling`: the loop applies that
# to p and q alike, so a bug there would cancel out of a reference built on it. Cells with
# expected count < 5 are pooled.
#
# Threshold: the seed is fixed, so each case is deterministic; under a correct sampler the
# probability that the chosen seed gives p < 1e-4 is 1e-4 per statistic, ~2e-3 over the 21
# statistics below. Wrong samplers run through the real loop are rejected with p-values below
# 1e-10 (`test_wrong_verifier_in_the_loop_is_rejected`, `test_exactness_test_has_power`).

N = 20000
V = SMALL.vocab_size
LENGTH = 3
P_MIN = 1e-4
PROMPT = [3, 5, 2, 7, 4]
SAMPLINGS = {  # name: (temperature, top_k, top_p); run with γ = 1 and 3.
    "T=1": (1.0, 0, 1.0),
    "T=0.7": (0.7, 0, 1.0),
    "top_k=3": (1.0, 3, 1.0),
    "top_p=0.75": (1.0, 0, 0.75),
}
COMBINED = {  # Each pair of processings together (run with γ = 2): every cut is active.
    "T=0.7,top_k=3": (0.7, 3, 1.0),
    "T=1.5,top_p=0.75": (1.5, 0, 0.75),
    "top_k=4,top_p=0.8": (1.0, 4, 0.8),
}
EOS = 4  # Under the T = 1 target: the first EOS is y_1 w.p. 0.11, y_2 w.p. 0.13, none w.p. 0.63.


@pytest.fixture(scope="module")
def small_models():
  return T5Model.init(SMALL, 0), T5Model.init(SMALL_DRAFT, 1)


def conditionals(model, sampling, length=LENGTH):
  """float64 teacher-forced conditionals of `model` after PROMPT (see specdec.testing)."""
  temperature, top_k, top_p = sampling
  return exact_conditionals(model, PROMPT, length=length, temperature=temperature, top_k=top_k,
                            top_p=top_p)


def run_loop(target, draft, gamma, sampling, seed, *, eos_id=None, length=LENGTH):
  temperature, top_k, top_p = sampling
  enc = jnp.tile(jnp.asarray([PROMPT], jnp.int32), (N, 1))
  result = specdec.speculative_generate(
      target, draft, enc, gamma=gamma, max_decode_len=length, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=jax.random.PRNGKey(seed), eos_id=eos_id)
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (N, length) and tokens.min() >= 0 and tokens.max() < V
  check_stats(result, gamma, eos_id)
  return result


def counts_of(tokens):
  """Counts of each continuation: int `[V ** length]` from tokens `[N, length]`."""
  tokens = np.asarray(tokens)
  index = np.ravel_multi_index(tuple(tokens.T), (V,) * tokens.shape[1])
  return np.bincount(index, minlength=V ** tokens.shape[1])


def accepted_law_gamma1(p, q):
  """Exact law of a row's total `stats.accepted` (0, 1, 2) for γ = 1 and LENGTH = 3.

  p, q: target and draft conditionals (`conditionals`). One iteration from a prefix y keeps the
  draft token x w.p. min(p(x|y), q(x|y)) and then appends t ~ p(·|y, x), or rejects and appends t
  w.p. max(0, p(t|y) − q(t|y)); the row stops once it has LENGTH tokens.
  """
  law = np.zeros(3)

  def walk(prefix, weight, accepted):
    if len(prefix) >= LENGTH:
      law[accepted] += weight
      return
    pi, qi = p[len(prefix)][prefix], q[len(prefix)][prefix]
    for x in range(V):
      keep = weight * min(pi[x], qi[x])
      if keep > 0 and len(prefix) + 2 >= LENGTH:
        law[accepted + 1] += keep  # The correction after x lies past LENGTH: it does not matter.
      elif keep > 0:
        for t in range(V):
          walk(prefix + (x, t), keep * p[len(prefix) + 1][prefix + (x,)][t], accepted + 1)
      walk(prefix + (x,), weight * max(0.0, pi[x] - qi[x]), accepted)

  walk((), 1.0, 0)
  assert np.isclose(law.sum(), 1.0), law.sum()
  return law


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_exactness(small_models, name, gamma):
  target, draft = small_models
  sampling = SAMPLINGS[name]
  p, q = conditionals(target, sampling), conditionals(draft, sampling)
  joint = joint_from(p)
  # The test is only meaningful if the draft is wrong often enough: total variation between
  # the draft's and the target's sequence distributions.
  assert 0.5 * np.abs(joint - joint_from(q)).sum() > 0.2
  result = run_loop(target, draft, gamma, sampling, seed=100 * gamma + len(name))
  pvalue = chi2_pvalue(counts_of(result.tokens), joint)
  assert pvalue > P_MIN, f"{name}, gamma={gamma}: p-value {pvalue:.3g}"
  if gamma == 1:  # The number accepted per row follows its exact law too.
    accepted = np.bincount(np.asarray(result.stats.accepted), minlength=3)
    pvalue = chi2_pvalue(accepted, accepted_law_gamma1(p, q))
    assert pvalue > P_MIN, f"{name}: accepted counts, p-value {pvalue:.3g}"


@pytest.mark.parametrize("name", list(COMBINED))
def test_exactness_combined_processing(small_models, name):
  target, draft = small_models
  sampling = COMBINED[name]
  joint = joint_from(conditionals(target, sampling))
  assert 0.5 * np.abs(joint - joint_from(conditionals(draft, sampling))).sum() > 0.2
  # Every cut removes mass: fewer continuations than without the truncation.
  assert (joint > 0).sum() < (joint_from(conditionals(target, (sampling[0], 0, 1.0))) > 0).sum()
  result = run_loop(target, draft, 2, sampling, seed=7 + len(name))
  pvalue = chi2_pvalue(counts_of(result.tokens), joint)
  assert pvalue > P_MIN, f"{name}: p-value {pvalue:.3g}"


def trivial_drafts():
  """The paper's unigram/bigram drafts fitted on a fixed random corpus, and prompt lookup
  (one-hot q: x is kept w.p. p(x), so nearly every iteration rejects or accepts fully)."""
  corpus = np.random.default_rng(5).integers(1, V, (40, 6))
  return {
      "unigram": UnigramDraft.fit(corpus, vocab_size=V),
      "bigram": BigramDraft.fit(corpus, vocab_size=V, smoothing=0.5),
      "prompt_lookup": PromptLookupDraft(vocab_size=V, max_ngram=2),
  }


@pytest.mark.parametrize("kind", ["unigram", "bigram", "prompt_lookup"])
def test_exactness_trivial_drafts(small_models, kind):
  target = small_models[0]
  sampling = (0.8, 0, 1.0)
  joint = joint_from(conditionals(target, sampling))
  result = run_loop(target, trivial_drafts()[kind], 2, sampling, seed=len(kind))
  pvalue = chi2_pvalue(counts_of(result.tokens), joint)
  assert pvalue > P_MIN, f"{kind}: p-value {pvalue:.3g}"
  accepted, drafted = np.asarray(result.stats.accepted), np.asarray(result.stats.drafted)
  assert 0 < accepted.sum() < drafted.sum()  # Both branches of verification were taken.


def test_exactness_with_eos(small_models):
  """Sampling with EOS: rows end at different steps and hold zeros after EOS; the output law is
  the image of the target's law under "zero everything after the first EOS"."""
  target, draft = small_models
  sampling = SAMPLINGS["T=1"]
  want = end_at_eos(joint_from(conditionals(target, sampling)), EOS)
  result = run_loop(target, draft, 2, sampling, seed=11, eos_id=EOS)  # check_stats inside.
  tokens = np.asarray(result.tokens)
  ends = first_eos(tokens, EOS)
  for step in range(LENGTH + 1):  # EOS at y_1, y_2, y_3 and no EOS all occur often.
    assert (ends == step).mean() > 0.05, step
  pvalue = chi2_pvalue(counts_of(tokens), want)
  assert pvalue > P_MIN, f"p-value {pvalue:.3g}"
  # A row whose first token is EOS (drafted or the correction) ends after one target pass.
  np.testing.assert_array_equal(np.asarray(result.stats.target_calls)[ends == 0], 1)


@pytest.mark.parametrize("gamma, length", [(5, LENGTH), (2, 1)])
def test_exactness_gamma_past_the_end(small_models, gamma, length):
  """γ > max_decode_len (blocks run past the end) and max_decode_len = 1 (one iteration)."""
  target, draft = small_models
  sampling = SAMPLINGS["T=1"]
  joint = joint_from(conditionals(target, sampling)[:length])
  result = run_loop(target, draft, gamma, sampling, seed=gamma, length=length)
  pvalue = chi2_pvalue(counts_of(result.tokens), joint)
  assert pvalue > P_MIN, f"gamma={gamma}, length={length}: p-value {pvalue:.3g}"
  calls, accepted = np.asarray(result.stats.target_calls), np.asarray(result.stats.accepted)
  if length == 1:
    np.testing.assert_array_equal(calls, 1)  # One pass gives every row its one token.
  else:  # A row done after one pass had length - 1 draft tokens kept in it; some rows were.
    assert (calls == 1).any() and (accepted[calls == 1] >= length - 1).all()


# --- power: wrong verifiers run through the real loop are rejected --------------------------


@pytest.fixture
def loop_verifier(monkeypatch):
  """`patch(verify_row)` makes the speculative loop verify with `verify_row` (the signature of
  `specdec.verification.verify_row`). The one place that knows how the loop reaches its
  verifier: update it when that changes. The loop's jit cache holds traces of the real verifier,
  so it is cleared before and after."""
  def patch(verify_row):
    # The token rule (`TokenVerification.verify`) calls `verification.verify_rows`; every row
    # proposes γ tokens here and lenience is 1, so its keyword options can be dropped.
    monkeypatch.setattr(verification_lib, "verify_rows",
                        lambda *args, **options: jax.vmap(verify_row)(*args))
    speculative_lib._speculative_generate.clear_cache()  # pylint: disable=protected-access
  yield patch
  speculative_lib._speculative_generate.clear_cache()  # pylint: disable=protected-access


def _kept_prefix(draft_tokens, accept_q, target_probs, key):
  """The acceptance test r_i·q_i(x_i) < p_i(x_i) with the q given → (n, the correction's key)."""
  gamma = draft_tokens.shape[0]
  accept_key, residual_key = jax.random.split(key)
  index = jnp.arange(gamma)
  r = jax.random.uniform(accept_key, (gamma,))
  kept = r * accept_q[index, draft_tokens] < target_probs[index, draft_tokens]
  return jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32), residual_key


def _residual_from_q(draft_tokens, draft_probs, target_probs, key):
  """Bug: after a rejection the correction is drawn from q_{n+1}, not norm(max(0, p − q))."""
  n, residual_key = _kept_prefix(draft_tokens, draft_probs, target_probs, key)
  weights = jnp.concatenate([draft_probs, target_probs[-1:]], axis=0)[n]
  return n, sampling_lib.draw(residual_key, weights)


def _accept_ignores_q(draft_tokens, draft_probs, target_probs, key):
  """Bug: x_i is kept while r_i < p_i(x_i) (q left out of the test); the residual is right."""
  n, residual_key = _kept_prefix(draft_tokens, jnp.ones_like(draft_probs), target_probs, key)
  q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)
  residual = jnp.maximum(target_probs[n] - q_padded[n], 0.0)
  residual = jnp.where(jnp.sum(residual) > 0, residual, target_probs[n])
  return n, sampling_lib.draw(residual_key, residual)


def _never_accept(draft_tokens, draft_probs, target_probs, key):
  """No draft token is ever kept and t ~ p_1: exact output (plain sampling), no speed-up. Only
  the number-accepted statistic can tell."""
  del draft_tokens, draft_probs
  return jnp.int32(0), sampling_lib.draw(jax.random.split(key)[1], target_probs[0])


@pytest.mark.parametrize("bug, statistics", [
    (_residual_from_q, ["joint"]),
    (_accept_ignores_q, ["joint", "accepted"]),
    (_never_accept, ["accepted"]),
])
def test_wrong_verifier_in_the_loop_is_rejected(small_models, loop_verifier, bug, statistics):
  """The statistics of `test_exactness` (γ = 1, T = 1, its seed) reject the loop's output when
  its verifier is wrong: the joint of the tokens, and the number of draft tokens kept."""
  target, draft = small_models
  sampling = SAMPLINGS["T=1"]
  p, q = conditionals(target, sampling), conditionals(draft, sampling)
  loop_verifier(bug)
  result = run_loop(target, draft, 1, sampling, seed=100 + len("T=1"))
  pvalues = {
      "joint": chi2_pvalue(counts_of(result.tokens), joint_from(p)),
      "accepted": chi2_pvalue(np.bincount(np.asarray(result.stats.accepted), minlength=3),
                              accepted_law_gamma1(p, q)),
  }
  for statistic in statistics:
    assert pvalues[statistic] < 1e-10, (bug.__name__, pvalues)


def test_exactness_test_has_power(small_models):
  """The same statistic rejects plausible wrong samplers at the same sample size, for every
  processing (cheaply: simulated exactly with numpy from the enumerated conditionals).

  (a) Drafting without verification: sequences ~ the draft's distribution.
  (b) A subtle bug, the correction drawn from q instead of norm(max(0, p − q)): each token is
      then ~ min(p, q) + (1 − β) q instead of p (β = Σ min(p, q)).
  """
  target, draft = small_models
  rng = np.random.default_rng(7)
  for name, sampling in {**SAMPLINGS, **COMBINED}.items():
    p, q = conditionals(target, sampling), conditionals(draft, sampling)
    buggy = [np.minimum(pi, qi) + (1.0 - np.minimum(pi, qi).sum(-1, keepdims=True)) * qi
             for pi, qi in zip(p, q)]
    for wrong in (q, buggy):
      joint = joint_from(wrong)
      counts = rng.multinomial(N, joint.ravel() / joint.sum())
      pvalue = chi2_pvalue(counts, joint_from(p))
      assert pvalue < 1e-10, (name, pvalue)


def test_accepted_law_in_limiting_cases():
  """`accepted_law_gamma1`, the law the loop's counts are held to, in the cases known by hand:
  q = p keeps every draft token (two iterations of one kept token each), and a q that drafts
  only a token p never gives keeps none."""
  p = [np.asarray(c) for c in conditionals(T5Model.init(SMALL, 0), SAMPLINGS["T=1"])]
  np.testing.assert_allclose(accepted_law_gamma1(p, p), [0, 0, 1], atol=1e-12)
  zero_p = [c.copy() for c in p]
  for c in zero_p:
    c[..., 0] = 0.0
    c /= c.sum(-1, keepdims=True)
  one_hot = [np.broadcast_to(np.eye(V)[0], c.shape) for c in p]
  np.testing.assert_allclose(accepted_law_gamma1(zero_p, one_hot), [1, 0, 0], atol=1e-12)


# --- greedy identity -------------------------------------------------------------------------

BATCH = 32
SEQ = 8
MAX_LEN = 16


@pytest.fixture(scope="module")
def prompts():
  """int32 [32, 8] random prompts with ragged lengths 1..8 (padding 0 at the end)."""
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, SEQ + 1, BATCH)
  lengths[:2] = [1, SEQ]
  enc = rng.integers(2, 32, (BATCH, SEQ))
  enc[np.arange(SEQ)[None, :] >= lengths[:, None]] = 0
  return jnp.asarray(enc, jnp.int32)


@pytest.fixture(scope="module")
def baseline(tiny_target, prompts):
  """Greedy `generate` without EOS, and an EOS id it produces mid-sequence in several rows."""
  free = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                     eos_id=None).tokens)
  # The token whose first occurrence is strictly inside the sequence in the most rows.
  first = {t: [np.flatnonzero(row == t)[0] for row in free if (row == t).any()]
           for t in range(2, 32)}
  eos = max(first, key=lambda t: sum(1 <= i < MAX_LEN - 1 for i in first[t]))
  with_eos = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                         eos_id=eos).tokens)
  ends = [(row == eos).any() for row in with_eos]
  assert 3 <= sum(ends) < BATCH, "want rows that end early and rows that do not"
  return free, eos, with_eos


def first_eos(tokens, eos):
  """Per row: index of the first EOS, or len if none."""
  is_eos = tokens == eos
  return np.where(is_eos.any(1), np.argmax(is_eos, axis=1), tokens.shape[1])


def check_stats(result, gamma, eos):
  """Bookkeeping every run must satisfy; returns numpy stats."""
  tokens = np.asarray(result.tokens)
  s = {k: np.asarray(getattr(result.stats, k))
       for k in ("target_calls", "draft_calls", "drafted", "accepted", "rejected")}
  for k, v in s.items():
    assert v.shape == (tokens.shape[0],) and v.dtype == np.int32, k
  np.testing.assert_array_equal(s["drafted"], gamma * s["target_calls"])
  np.testing.assert_array_equal(s["draft_calls"], gamma * s["target_calls"])
  assert (s["accepted"] <= s["drafted"]).all()
  assert (s["rejected"] <= s["target_calls"]).all()
  # Every iteration writes (accepted + 1) tokens; all but the last of a row are needed in full.
  produced = s["accepted"] + s["target_calls"]
  length = np.minimum(first_eos(tokens, eos) + 1, tokens.shape[1])
  assert (produced >= length).all()
  assert (produced - (gamma + 1) < length).all()  # The row stops once it has its tokens.
  if eos is not None:
    # Nothing but padding after the first EOS.
    after = np.arange(tokens.shape[1])[None, :] > first_eos(tokens, eos)[:, None]
    assert (tokens[after] == 0).all()
  return s


GREEDY_GAMMAS = [1, 2, 4, 7]


@pytest.fixture(scope="module")
def drafts(tiny_draft, baseline):
  free = baseline[0]
  return {
      "t5": tiny_draft,
      # Fitted on the target's own outputs: agrees often, so blocks are often long.
      "bigram": BigramDraft.fit(free, vocab_size=32, smoothing=0.1),
      "prompt_lookup": PromptLookupDraft(vocab_size=32),
  }


@pytest.mark.parametrize("gamma", GREEDY_GAMMAS)
@pytest.mark.parametrize("kind", ["t5", "bigram", "prompt_lookup"])
def test_greedy_identity(tiny_target, prompts, baseline, drafts, kind, gamma):
  _, eos, want = baseline
  result = specdec.speculative_generate(tiny_target, drafts[kind], prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=eos)
  np.testing.assert_array_equal(np.asarray(result.tokens), want)
  check_stats(result, gamma, eos)


@pytest.mark.parametrize("gamma", [2, 7])  # γ = 4 without EOS: test_call_counts_target_as_draft.
def test_greedy_target_as_draft_eos_mid_block(tiny_target, prompts, baseline, gamma):
  """α = 1 with EOS: blocks of γ+1 tokens, EOS inside blocks; ended rows stop early."""
  _, eos, want = baseline
  result = specdec.speculative_generate(tiny_target, tiny_target, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=eos)
  tokens = np.asarray(result.tokens)
  np.testing.assert_array_equal(tokens, want)
  s = check_stats(result, gamma, eos)
  ends = first_eos(tokens, eos)
  length = np.minimum(ends + 1, MAX_LEN)
  # Every draft accepted, so row i takes ceil(length_i / (γ+1)) passes; early EOS → fewer.
  np.testing.assert_array_equal(s["target_calls"], -(-length // (gamma + 1)))
  np.testing.assert_array_equal(s["accepted"], s["drafted"])
  # EOS fell strictly inside a block (not at its last slot) for some row; γ = 1 has 2-slot
  # blocks, so index i is mid-block when i % (γ+1) != γ.
  ended = ends < MAX_LEN
  assert (ended & (ends % (gamma + 1) != gamma)).any()
  assert s["target_calls"][ended].min() < s["target_calls"][~ended].min()


# --- call counts ------------------------------------------------------------------------------


def test_call_counts_target_as_draft(tiny_target, prompts, baseline):
  # γ = 4, 16 tokens: 3 full blocks of 5 and a last block cut to 1 token.
  gamma = 4
  result = specdec.speculative_generate(tiny_target, tiny_target, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(np.asarray(result.tokens), baseline[0])
  s = check_stats(result, gamma, None)
  np.testing.assert_array_equal(s["target_calls"], -(-MAX_LEN // (gamma + 1)))
  np.testing.assert_array_equal(s["accepted"], s["drafted"])
  np.testing.assert_array_equal(s["rejected"], 0)


def test_call_counts_always_wrong_draft(tiny_target, prompts, baseline):
  free = baseline[0]
  never = [t for t in range(32) if not (free == t).any()][0]  # Greedy target never picks it.
  draft = UnigramDraft(log_probs=jnp.where(jnp.arange(32) == never, 0.0, -jnp.inf))
  gamma = 3
  result = specdec.speculative_generate(tiny_target, draft, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(np.asarray(result.tokens), free)
  s = check_stats(result, gamma, None)
  np.testing.assert_array_equal(s["target_calls"], MAX_LEN)  # One token per target pass.
  np.testing.assert_array_equal(s["accepted"], 0)
  np.testing.assert_array_equal(s["rejected"], MAX_LEN)


# --- capacity: no write past the caches the loop allocates ---------------------------------


@pytest.mark.parametrize("gamma, max_len, temperature", [(7, MAX_LEN, 1.0), (3, 1, 0.0)])
def test_writes_stay_inside_the_caches(tiny_target, tiny_draft, prompts, gamma, max_len,
                                       temperature):
  """Every block the loop feeds the target and the draft ends within the cache it allocated.

  Under jit `write_rows` cannot check traced positions (specdec/cache.py), so the bound is by
  construction; this records every write. Sampling with γ = 7 over 16 tokens leaves rows that
  ended with up to γ tokens of overshoot in the batch while others run: their writes reach past
  max_decode_len + γ + 1, so a smaller allocation would be caught.
  """
  target = WriteRecorder(tiny_target, tag="target")
  draft = WriteRecorder(tiny_draft, tag="draft")
  target.clear()
  draft.clear()
  specdec.speculative_generate(target, draft, prompts, gamma=gamma, max_decode_len=max_len,
                               temperature=temperature, rng=jax.random.PRNGKey(0), eos_id=1)
  jax.effects_barrier()
  for recorder in (target, draft):
    writes = recorder.writes()
    assert writes, recorder.tag
    ends, capacity = max(end for end, _ in writes), writes[0][1]
    assert ends <= capacity, (recorder.tag, ends, capacity)
  if max_len > 1:
    assert max(end for end, _ in target.writes()) > max_len + gamma + 1


# --- rows are independent --------------------------------------------------------------------


def test_rows_are_independent(tiny_target, tiny_draft, prompts):
  def run(enc, seed):
    return np.asarray(specdec.speculative_generate(
        tiny_target, tiny_draft, enc, gamma=3, max_decode_len=MAX_LEN, temperature=1.0,
        rng=jax.random.PRNGKey(seed), eos_id=1).tokens)

  base = run(prompts, 0)
  # Change every row but the first 8 (same shape, so the same compiled loop).
  others = np.asarray(prompts).copy()
  others[8:] = np.roll(others[8:], 3, axis=0)
  others[8:, 0] = (others[8:, 0] + 5) % 30 + 2
  changed = run(jnp.asarray(others), 0)
  np.testing.assert_array_equal(changed[:8], base[:8])
  assert (changed[8:] != base[8:]).any()
  np.testing.assert_array_equal(run(prompts, 0), base)  # Same key, same tokens.
  fresh = run(prompts, 1)
  assert (fresh != base).any(axis=1).mean() > 0.5  # Another key, other tokens (most rows).
  # Identical prompts in a batch are independent samples, not copies.
  same = run(jnp.tile(prompts[:1], (BATCH, 1)), 0)
  assert len({tuple(row) for row in same}) > BATCH // 2
  np.testing.assert_array_equal(same[0], base[0])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(gamma=0), ValueError, "gamma"),
    (dict(gamma=-1), ValueError, "gamma"),
    (dict(gamma=2.0), TypeError, "gamma"),
    (dict(gamma=True), TypeError, "gamma"),
    (dict(gamma=None), TypeError, "gamma"),
    (dict(max_decode_len=0), ValueError, "max_decode_len"),
    (dict(max_decode_len=2.5), TypeError, "max_decode_len"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(temperature=1.0, top_p=0.0), ValueError, "top_p"),
    (dict(temperature=1.0, top_k=-1), ValueError, "top_k"),
    (dict(temperature=1.0), ValueError, "rng"),  # Sampling needs a key.
    (dict(eos_id=32), ValueError, "eos_id"),
    (dict(eos_id="1"), TypeError, "eos_id"),
])
def test_bad_arguments(tiny_target, tiny_draft, prompts, kwargs, error, name):
  args = dict(gamma=2, max_decode_len=4)
  args.update(kwargs)
  with pytest.raises(error, match=name):
    specdec.speculative_generate(tiny_target, tiny_draft, prompts, **args)


def test_bad_models_and_tokens(tiny_target, tiny_draft, prompts, small_models):
  run = lambda target, draft, enc: specdec.speculative_generate(target, draft, enc, gamma=2,
                                                                max_decode_len=4)
  with pytest.raises(ValueError, match="vocab"):
    run(tiny_target, small_models[1], prompts)  # Draft vocabulary 8, target 32.
  with pytest.raises(ValueError, match="vocab"):
    run(tiny_target, UnigramDraft(log_probs=jnp.zeros(31)), prompts)
  for not_a_draft in ("draft", {"vocab_size": 32}, None, jnp.zeros(32)):
    with pytest.raises(TypeError, match="draft"):
      run(tiny_target, not_a_draft, prompts)
  with pytest.raises(TypeError, match="target"):
    run("target", tiny_draft, prompts)
  with pytest.raises(TypeError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.astype(jnp.float32))
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.at[0, 0].set(32))  # Id >= vocab.
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts[0])  # Rank 1.
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.at[0, 0].set(-1))
