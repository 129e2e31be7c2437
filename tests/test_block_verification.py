"""Block verification (Sun, Mendlovic, Leviathan et al., ICLR 2025): exact, and better in expectation.

Three levels, each against an independent reference (`specdec.testing`: plain-Python enumeration
of one iteration, in floats or exact fractions):

1. The rule itself (`testing.block_decision`, the issue's summary of the paper's Algorithm 2):
   over random prefix-dependent p and q trees, one iteration's output completed with fresh
   draws from p has exactly p's law (to 1e-12), and the two-token example of the paper's
   Section 3 keeps 10/9 tokens token-wise and 11/9 block-wise in exact arithmetic.
2. `verify_block` on synthetic distributions: χ² of its completed outputs against ∏ p_i, and of
   the number kept against the enumerated law; rows with fewer proposals; one-hot p and q give
   `verify_greedy`'s result.
3. `speculative_generate(..., verification="block")`: the two-token example sampled through the
   loop (its law of τ, and 11/9 against 10/9), χ² of whole sequences against the target's
   enumerated law at T = 1, 0.7, top-k, top-p and γ ∈ {1, 3}, greedy identity with `generate`.

Thresholds: every seed is fixed, so each test is deterministic; under a correct sampler the
chance that a chosen seed gives a p-value below 1e-4 is 1e-4 per check. The power checks show
plausible wrong block rules give p-values below 1e-10 with the same statistic and sample size.
"""

import fractions
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import testing
from specdec.testing import (PROMPT, SAMPLINGS, SMALL, SMALL_DRAFT, block_decision, chi2_pvalue,
                             exact_joint, iteration_law, law_array, sequence_law, token_decision)
from specdec.verification import verify_block

N = 20000
P_MIN = 1e-4
V = 6
GAMMA = 3
F = fractions.Fraction


# --- 1. the rule, enumerated --------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [1, 2, 3])
@pytest.mark.parametrize("zeros", [0, 1])
def test_block_rule_is_exact_by_enumeration(gamma, zeros):
  """Prefix-dependent p and q (3 tokens, some with probability 0): the completed output of one
  iteration has exactly the target's law. The token rule is checked the same way."""
  for seed in range(3):
    rng = np.random.default_rng(100 * gamma + 10 * zeros + seed)
    p = testing.random_tree(rng, 3, zeros=zeros)
    q = testing.random_tree(rng, 3, zeros=zeros)
    want = law_array(sequence_law(p, vocab_size=3, length=gamma + 1), vocab_size=3,
                     length=gamma + 1)
    for decide in (block_decision, token_decision):
      got = law_array(iteration_law(p, q, vocab_size=3, gamma=gamma, decide=decide),
                      vocab_size=3, length=gamma + 1)
      np.testing.assert_allclose(got, want, atol=1e-12, err_msg=decide.__name__)


P2, Q2 = (F(1, 3), F(2, 3)), (F(2, 3), F(1, 3))  # The paper's example: p and q at every position.


def test_two_token_example_exact():
  p, q = (lambda prefix: P2), (lambda prefix: Q2)
  expected = functools.partial(testing.expected_accepted, p, q, gamma=2)
  assert expected(decide=token_decision) == F(10, 9)
  assert expected(decide=block_decision) == F(11, 9)
  target = sequence_law(p, vocab_size=2, length=3)
  for decide in (token_decision, block_decision):  # Exact in exact arithmetic, not just 1e-12.
    law = iteration_law(p, q, vocab_size=2, gamma=2, decide=decide)
    assert {s: v for s, v in law.items() if v} == {s: v for s, v in target.items() if v}


def tau_next_law(decide, p, q, gamma, vocab=V):
  return testing.decision_law(decide, p, q, gamma=gamma, vocab_size=vocab)


# --- 2. verify_block on synthetic distributions ---------------------------------------------------


def run_verify_block(p, q, seed, num_proposed=None):
  """p `[γ+1, V]`, q `[γ, V]` for every row, x_i ~ q_i → numpy (tokens, τ, next token)."""
  rng = np.random.default_rng(seed)
  tokens = np.stack([rng.choice(V, size=N, p=q[i] / q[i].sum()) for i in range(GAMMA)], axis=1)
  k = None if num_proposed is None else jnp.asarray(num_proposed, jnp.int32)
  tau, next_token = verify_block(
      jnp.asarray(tokens, jnp.int32), jnp.broadcast_to(jnp.asarray(q, jnp.float32), (N,) + q.shape),
      jnp.broadcast_to(jnp.asarray(p, jnp.float32), (N,) + p.shape), jax.random.PRNGKey(seed),
      num_proposed=k)
  tau, next_token = np.asarray(tau), np.asarray(next_token)
  assert tau.dtype == np.int32 and next_token.dtype == np.int32
  assert tau.min() >= 0 and tau.max() <= GAMMA and next_token.max() < V
  return tokens, tau, next_token


def completed(p, tokens, tau, next_token, seed):
  """(x_1..x_τ, t) completed with fresh draws Y_j ~ p_j: int `[N, γ+1]`."""
  rng = np.random.default_rng(seed + 1000)
  out = np.stack([rng.choice(V, size=N, p=p[j] / p[j].sum()) for j in range(GAMMA + 1)], axis=1)
  slot = np.arange(GAMMA + 1)[None, :]
  padded = np.concatenate([tokens, np.zeros((N, 1), tokens.dtype)], axis=1)
  out = np.where(slot < tau[:, None], padded, out)
  return np.where(slot == tau[:, None], next_token[:, None], out)


def product_law(p):
  joint = np.ones(())
  for row in np.asarray(p, np.float64):
    joint = np.multiply.outer(joint, row)
  return joint


def check_block_exact(p, q, seed):
  tokens, tau, next_token = run_verify_block(p, q, seed)
  out = completed(p, tokens, tau, next_token, seed)
  index = np.ravel_multi_index(tuple(out.T), (V,) * (GAMMA + 1))
  pv = chi2_pvalue(np.bincount(index, minlength=V ** (GAMMA + 1)), product_law(p))
  assert pv > P_MIN, f"completed output is not ~ prod p_i: p-value {pv:.3g}"
  law = tau_next_law(block_decision, np.asarray(p, np.float64), np.asarray(q, np.float64), GAMMA)
  pv_tau = chi2_pvalue(np.bincount(tau * V + next_token, minlength=(GAMMA + 1) * V), law)
  assert pv_tau > P_MIN, f"(tau, next token) does not follow its law: p-value {pv_tau:.3g}"
  return tau, law.sum(1)


def dirichlet(rng, rows, zeros=()):
  probs = rng.dirichlet(np.full(V, 1.0), size=rows)
  probs[:, list(zeros)] = 0.0
  return (probs / probs.sum(1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("case", ["generic", "q_zeros", "p_zeros"])
def test_verify_block_exact(case):
  rng = np.random.default_rng({"generic": 0, "q_zeros": 2, "p_zeros": 4}[case])
  p = dirichlet(rng, GAMMA + 1, zeros=(4, 5) if case == "p_zeros" else ())
  q = dirichlet(rng, GAMMA, zeros=(0, 1, 2) if case == "q_zeros" else ())
  tau, law = check_block_exact(p, q, seed=1)
  # Never fewer than the token rule in expectation (here strictly more).
  token_mean = tau_next_law(token_decision, p.astype(np.float64), q.astype(np.float64),
                            GAMMA).sum(1) @ np.arange(GAMMA + 1)
  assert law @ np.arange(GAMMA + 1) > token_mean
  assert 0 < (tau == GAMMA).mean() < 1 and (tau == 0).any()


def test_verify_block_p_equals_q_keeps_everything():
  rng = np.random.default_rng(6)
  p = dirichlet(rng, GAMMA + 1)
  _, tau, next_token = run_verify_block(p, p[:GAMMA].copy(), seed=7)
  np.testing.assert_array_equal(tau, GAMMA)
  pv = chi2_pvalue(np.bincount(next_token, minlength=V), p[GAMMA].astype(np.float64))
  assert pv > P_MIN, pv


def test_verify_block_fewer_proposals():
  """Rows proposing k ∈ {1, 2, 3} of γ = 3: τ ≤ k, the completed output ~ ∏ p_i, and the law of
  τ for k = 2 is the enumerated one (p_3 itself after x_2)."""
  rng = np.random.default_rng(8)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  k = np.arange(N) % 3 + 1
  tokens, tau, next_token = run_verify_block(p, q, seed=9, num_proposed=k)
  assert (tau <= k).all()
  out = completed(p, tokens, tau, next_token, seed=9)
  index = np.ravel_multi_index(tuple(out.T), (V,) * (GAMMA + 1))
  pv = chi2_pvalue(np.bincount(index, minlength=V ** (GAMMA + 1)), product_law(p))
  assert pv > P_MIN, pv
  two = k == 2
  law = tau_next_law(block_decision, p[:3].astype(np.float64), q[:2].astype(np.float64), 2)
  pv_tau = chi2_pvalue(np.bincount(tau[two] * V + next_token[two], minlength=3 * V), law)
  assert pv_tau > P_MIN, pv_tau


@pytest.mark.parametrize("with_k", [False, True])
def test_verify_block_reduces_to_greedy(with_k):
  """One-hot p and q (temperature → 0): block verification keeps what `verify_greedy` keeps."""
  rng = np.random.default_rng(10)
  rows, gamma, vocab = 256, 4, 3  # Few tokens: draft and target agree often.
  draft = rng.integers(0, vocab, (rows, gamma))
  target = rng.integers(0, vocab, (rows, gamma + 1))
  k = rng.integers(1, gamma + 1, rows) if with_k else None
  q = np.eye(vocab, dtype=np.float32)[draft]
  p = np.eye(vocab, dtype=np.float32)[target]
  kk = None if k is None else jnp.asarray(k, jnp.int32)
  tau, t = verify_block(jnp.asarray(draft, jnp.int32), jnp.asarray(q), jnp.asarray(p),
                        jax.random.PRNGKey(0), num_proposed=kk)
  n, g = specdec.verify_greedy(jnp.asarray(draft, jnp.int32), jnp.asarray(10.0 * p),
                               num_proposed=kk)
  np.testing.assert_array_equal(tau, n)
  np.testing.assert_array_equal(t, g)
  assert 0 < (np.asarray(n) == gamma).sum() and (np.asarray(n) == 0).any()


# Plausible wrong block rules: stopping at the first failure, dropping a_τ from the residual, and
# keeping the whole block with probability 1 instead of a_γ.


def first_failure(p_cond, q_cond, x):
  """τ = the last i before the first η_i > h_i (the token rule's scan with block weights)."""
  _, residuals = block_decision(p_cond, q_cond, x)
  _, h = testing.block_weights(p_cond, q_cond, x)
  k, taus, alive = len(x), [], 1.0
  for i in range(k + 1):
    taus.append(alive * (1.0 if i == k else 1.0 - h[i + 1]))
    alive *= h[i + 1] if i < k else 1.0
  return taus, residuals


def residual_without_a(p_cond, q_cond, x):
  taus, residuals = block_decision(p_cond, q_cond, x)
  return taus, [r if i == len(x) else token_decision(p_cond, q_cond, x)[1][i]
                for i, r in enumerate(residuals)]


def keep_all_surely(p_cond, q_cond, x):
  _, residuals = block_decision(p_cond, q_cond, x)
  return [0.0] * len(x) + [1.0], residuals


def test_block_test_has_power():
  """The (τ, next token) statistic of `check_block_exact` rejects each wrong rule, sampled exactly
  from its enumerated law, at the same N (the completed-output statistic alone misses the
  residual bug: its law is within ~2e-3 of ∏ p)."""
  rng = np.random.default_rng(0)
  p, q = dirichlet(rng, GAMMA + 1).astype(np.float64), dirichlet(rng, GAMMA).astype(np.float64)
  want = tau_next_law(block_decision, p, q, GAMMA)
  sampler = np.random.default_rng(99)
  for wrong in (first_failure, residual_without_a, keep_all_surely):
    law = tau_next_law(wrong, p, q, GAMMA)
    counts = sampler.multinomial(N, law.ravel() / law.sum())
    pv = chi2_pvalue(counts, want)
    assert pv < 1e-10, (wrong.__name__, pv)


# --- 3. through speculative_generate ---------------------------------------------------------


def two_token_models():
  """Target p = (1/3, 2/3), draft q = (2/3, 1/3) at every position (`PositionalLM` stubs)."""
  log = lambda d: jnp.log(jnp.asarray([[float(v) for v in d]], jnp.float32))
  return testing.PositionalLM(log(P2)), testing.PositionalLM(log(Q2))


@pytest.mark.parametrize("verification, want", [("token", F(10, 9)), ("block", F(11, 9))])
def test_two_token_example_sampled(verification, want):
  """One iteration per row (max_decode_len = 1): accepted[b] is row b's τ. Its law matches the
  enumeration, and its mean is 10/9 token-wise, 11/9 block-wise (the other value is > 10 SE off)."""
  target, draft = two_token_models()
  enc = jnp.ones((N, 1), jnp.int32)
  result = specdec.speculative_generate(target, draft, enc, gamma=2, max_decode_len=1,
                                        temperature=1.0, rng=jax.random.PRNGKey(5), eos_id=None,
                                        verification=verification)
  np.testing.assert_array_equal(result.stats.target_calls, 1)
  tau = np.asarray(result.stats.accepted)
  decide = token_decision if verification == "token" else block_decision
  p = np.asarray([[float(v) for v in P2]] * 3)
  q = np.asarray([[float(v) for v in Q2]] * 2)
  law = tau_next_law(decide, p, q, 2, vocab=2).sum(1)
  assert np.isclose(law @ np.arange(3), float(want))
  pv = chi2_pvalue(np.bincount(tau, minlength=3), law)
  assert pv > P_MIN, (verification, law, pv)
  se = np.sqrt((law @ np.arange(3) ** 2 - float(want) ** 2) / N)
  assert abs(tau.mean() - float(want)) < 4.5 * se
  other = F(11, 9) if verification == "token" else F(10, 9)
  assert abs(tau.mean() - float(other)) > 10 * se
  # The first output token is ~ p whatever the rule.
  pv_first = chi2_pvalue(np.bincount(np.asarray(result.tokens)[:, 0], minlength=2),
                         np.asarray([float(v) for v in P2]))
  assert pv_first > P_MIN, pv_first


@pytest.fixture(scope="module")
def small_models():
  return specdec.T5Model.init(SMALL, 0), specdec.T5Model.init(SMALL_DRAFT, 1)


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_block_exactness_through_the_loop(small_models, name, gamma):
  target, draft = small_models
  temperature, top_k, top_p = SAMPLINGS[name]
  law = functools.partial(exact_joint, prompt=PROMPT, length=3, temperature=temperature,
                          top_k=top_k, top_p=top_p)
  joint = law(target)
  assert 0.5 * np.abs(joint - law(draft)).sum() > 0.2  # The draft is wrong often enough.
  counts, result = testing.speculative_counts(
      target, draft, PROMPT, n=N, length=3, temperature=temperature, top_k=top_k, top_p=top_p,
      seed=300 + 10 * gamma + len(name), gamma=gamma, verification="block")
  pv = chi2_pvalue(counts, joint)
  assert pv > P_MIN, f"{name}, gamma={gamma}: p-value {pv:.3g}"
  s = result.stats
  np.testing.assert_array_equal(s.drafted, gamma * np.asarray(s.target_calls))
  assert (np.asarray(s.accepted) <= np.asarray(s.drafted)).all()


def test_greedy_block_is_greedy(tiny_target, tiny_draft):
  rng = np.random.default_rng(1)
  enc = jnp.asarray(rng.integers(2, 32, (8, 6)), jnp.int32)
  want = np.asarray(specdec.generate(tiny_target, enc, max_decode_len=10).tokens)
  got = specdec.speculative_generate(tiny_target, tiny_draft, enc, gamma=3, max_decode_len=10,
                                     verification="block")
  np.testing.assert_array_equal(np.asarray(got.tokens), want)


@pytest.mark.parametrize("value, error", [("blocks", ValueError), ("", ValueError),
                                          ("Token", ValueError), (None, TypeError),
                                          (1, TypeError)])
def test_bad_verification(tiny_target, tiny_draft, value, error):
  enc = jnp.ones((2, 3), jnp.int32)
  with pytest.raises(error, match="verification"):
    specdec.speculative_generate(tiny_target, tiny_draft, enc, gamma=2, max_decode_len=4,
                                 temperature=1.0, rng=0, verification=value)
