"""Adaptive γ: `speculative_generate(..., confidence_threshold=t)` (`specdec.proposal`).

A row stops proposing after a token its draft gave probability < t; γ is the maximum. Exact
because the decision is the draft's own (the argument is in `specdec.proposal`'s docstring):

1. by enumeration (`specdec.testing.iteration_law`): with the confidence rule on random
   prefix-dependent p and q trees, one iteration's completed output has exactly p's law, under
   the token rule and the block rule;
2. `verify` with fewer proposals per row: (n, next token) against its enumerated law;
3. through the loop: χ² of whole sequences against the target's law at T = 1, 0.7, top-k, top-p
   (γ = 3, thresholds that stop rows at every step), token and block rule; greedy identity with
   `generate`; a threshold no token falls below reproduces the fixed-γ loop bit for bit, and one
   every token falls below leaves one draft pass per target pass (the draft loop really stops).

Thresholds as in tests/test_block_verification.py (p-value 1e-4 per check, fixed seeds).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import BigramDraft, testing
from specdec.testing import (PROMPT, SAMPLINGS, SMALL, SMALL_DRAFT, block_decision, chi2_pvalue,
                             exact_joint, iteration_law, law_array, sequence_law, token_decision)
from specdec.verification import verify_rows

N = 20000
P_MIN = 1e-4


def confidence_stop(q, threshold):
  """The rule of `ConfidenceStop` on a prefix tree: stop after x_i when q(x_1..x_{i-1})(x_i) < t."""
  return lambda prefix: q(prefix[:-1])[prefix[-1]] < threshold


@pytest.mark.parametrize("decide", [token_decision, block_decision], ids=["token", "block"])
def test_stopping_is_exact_by_enumeration(decide):
  stopped = 0
  for seed in range(4):
    rng = np.random.default_rng(seed)
    p, q = testing.random_tree(rng, 3), testing.random_tree(rng, 3)
    stop = confidence_stop(q, 0.3)
    for gamma in (2, 3):
      want = law_array(sequence_law(p, vocab_size=3, length=gamma + 1), vocab_size=3,
                       length=gamma + 1)
      got = law_array(iteration_law(p, q, vocab_size=3, gamma=gamma, decide=decide, stop=stop),
                      vocab_size=3, length=gamma + 1)
      np.testing.assert_allclose(got, want, atol=1e-12)
      fixed = testing.expected_accepted(p, q, gamma=gamma, decide=decide)
      stopped += testing.expected_accepted(p, q, gamma=gamma, decide=decide, stop=stop) < fixed
  assert stopped >= 6  # The rule stops often enough to matter (fewer tokens kept, then).


@pytest.mark.parametrize("k", [1, 2])
def test_token_rule_with_fewer_proposals(k):
  """`verify_rows` with k of γ = 3 proposed: (n, next token) follows the law of a k-token
  iteration (after x_k the residual is p_{k+1} itself), whatever q and x say past k."""
  vocab, gamma = 6, 3
  rng = np.random.default_rng(20 + k)
  p = rng.dirichlet(np.ones(vocab), gamma + 1).astype(np.float32)
  q = rng.dirichlet(np.ones(vocab), gamma).astype(np.float32)
  draws = np.random.default_rng(30 + k)
  tokens = np.stack([draws.choice(vocab, N, p=q[i] / q[i].sum()) for i in range(gamma)], 1)
  keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.PRNGKey(k), b))(jnp.arange(N))
  n, t = verify_rows(jnp.asarray(tokens, jnp.int32), jnp.broadcast_to(q, (N,) + q.shape),
                     jnp.broadcast_to(p, (N,) + p.shape), keys,
                     num_proposed=jnp.full((N,), k, jnp.int32))
  n, t = np.asarray(n), np.asarray(t)
  assert n.max() <= k
  law = testing.decision_law(token_decision, p[:k + 1].astype(np.float64),
                             q[:k].astype(np.float64), gamma=k, vocab_size=vocab)
  pv = chi2_pvalue(np.bincount(n * vocab + t, minlength=(k + 1) * vocab), law)
  assert pv > P_MIN, pv


# --- through speculative_generate ---------------------------------------------------------------

THRESHOLDS = {"T=1": 0.15, "T=0.7": 0.25, "top_k=3": 0.35, "top_p=0.75": 0.3}


@pytest.fixture(scope="module")
def small_models():
  return specdec.T5Model.init(SMALL, 0), specdec.T5Model.init(SMALL_DRAFT, 1)


@pytest.mark.parametrize("verification", ["token", "block"])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_adaptive_exactness_through_the_loop(small_models, name, verification):
  target, draft = small_models
  gamma = 3
  temperature, top_k, top_p = SAMPLINGS[name]
  joint = exact_joint(target, PROMPT, length=3, temperature=temperature, top_k=top_k,
                      top_p=top_p)
  counts, result = testing.speculative_counts(
      target, draft, PROMPT, n=N, length=3, temperature=temperature, top_k=top_k, top_p=top_p,
      seed=500 + len(name) + len(verification), gamma=gamma, verification=verification,
      confidence_threshold=THRESHOLDS[name])
  pv = chi2_pvalue(counts, joint)
  assert pv > P_MIN, f"{name}, {verification}: p-value {pv:.3g}"
  s = {k: np.asarray(getattr(result.stats, k)) for k in ("target_calls", "drafted", "accepted")}
  per_call = s["drafted"].sum() / s["target_calls"].sum()
  assert 1.2 < per_call < gamma - 0.2, per_call  # Rows stop early, at varying points.
  assert (s["drafted"] >= s["target_calls"]).all() and (s["accepted"] <= s["drafted"]).all()


BATCH, SEQ, MAX_LEN = 16, 8, 16


@pytest.fixture(scope="module")
def prompts():
  return jnp.asarray(testing.ragged_prompts(BATCH, SEQ, vocab_size=32))


@pytest.fixture(scope="module")
def baseline(tiny_target, prompts):
  """Greedy outputs, and an EOS id that ends several rows early."""
  free = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                     eos_id=None).tokens)
  counts = np.bincount(free[:, 1:-1].ravel(), minlength=32)
  counts[:2] = 0
  eos = int(np.argmax(counts))
  return free, eos, np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                                eos_id=eos).tokens)


@pytest.mark.parametrize("kind, gamma, threshold", [("t5", 4, 0.15), ("bigram", 4, 0.3),
                                                    ("bigram", 7, 0.6)])
def test_greedy_identity(tiny_target, tiny_draft, prompts, baseline, kind, gamma, threshold):
  free, eos, want = baseline
  draft = tiny_draft if kind == "t5" else BigramDraft.fit(free, vocab_size=32, smoothing=0.1)
  result = specdec.speculative_generate(tiny_target, draft, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=eos,
                                        confidence_threshold=threshold)
  np.testing.assert_array_equal(np.asarray(result.tokens), want)
  s = {k: np.asarray(getattr(result.stats, k)) for k in
       ("target_calls", "draft_calls", "drafted", "accepted", "rejected")}
  assert (s["drafted"] < gamma * s["target_calls"]).any()  # Some row stopped early.
  assert (s["target_calls"] <= s["drafted"]).all() and (s["drafted"] <= s["draft_calls"]).all()
  assert (s["draft_calls"] <= gamma * s["target_calls"]).all()
  assert (s["accepted"] <= s["drafted"]).all() and (s["rejected"] <= s["target_calls"]).all()
  # Each iteration writes accepted + 1 tokens; a row stops once it has its tokens.
  is_eos = want == eos
  length = np.where(is_eos.any(1), np.argmax(is_eos, 1) + 1, MAX_LEN)
  produced = s["accepted"] + s["target_calls"]
  assert (produced >= length).all() and (produced - (gamma + 1) < length).all()


def test_threshold_nothing_falls_below_is_the_fixed_loop(tiny_target, tiny_draft, prompts):
  """Every token beats the threshold: the while loop draws the same tokens as the scan."""
  run = functools.partial(specdec.speculative_generate, tiny_target, tiny_draft, prompts, gamma=3,
                          max_decode_len=MAX_LEN, temperature=1.0, rng=jax.random.PRNGKey(4))
  fixed, adaptive = run(), run(confidence_threshold=1e-30)
  np.testing.assert_array_equal(np.asarray(adaptive.tokens), np.asarray(fixed.tokens))
  for name in ("target_calls", "draft_calls", "drafted", "accepted", "rejected"):
    np.testing.assert_array_equal(getattr(adaptive.stats, name), getattr(fixed.stats, name))


def test_threshold_everything_falls_below_stops_the_draft(tiny_target, tiny_draft, prompts,
                                                          baseline):
  """Every row stops after x_1: one draft pass per target pass (the catch-up), whatever γ."""
  result = specdec.speculative_generate(tiny_target, tiny_draft, prompts, gamma=4,
                                        max_decode_len=MAX_LEN, eos_id=None,
                                        confidence_threshold=0.999)
  np.testing.assert_array_equal(np.asarray(result.tokens), baseline[0])
  calls = np.asarray(result.stats.target_calls)
  np.testing.assert_array_equal(result.stats.drafted, calls)
  np.testing.assert_array_equal(result.stats.draft_calls, calls)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(confidence_threshold=0.0), ValueError, "confidence_threshold"),
    (dict(confidence_threshold=1.0), ValueError, "confidence_threshold"),
    (dict(confidence_threshold=-0.5), ValueError, "confidence_threshold"),
    (dict(confidence_threshold=float("nan")), ValueError, "confidence_threshold"),
    (dict(confidence_threshold="0.5"), TypeError, "confidence_threshold"),
    (dict(confidence_threshold=True), TypeError, "confidence_threshold"),
    (dict(confidence_threshold=0.5, draft_unroll=2), ValueError, "draft_unroll"),
])
def test_bad_arguments(tiny_target, tiny_draft, prompts, kwargs, error, name):
  with pytest.raises(error, match=name):
    specdec.speculative_generate(tiny_target, tiny_draft, prompts, gamma=2, max_decode_len=4,
                                 **kwargs)
