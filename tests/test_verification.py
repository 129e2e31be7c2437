"""Tests for `specdec.verify` and `specdec.verify_greedy` on synthetic distributions.

Exactness is tested as a hypothesis test: a batch of N identical rows is N independent runs of
the accept/reject step (row b uses its own key), and the empirical law of what it outputs is
compared with the exactly enumerated law by a chi-squared test.

Why the output law is known exactly. The target distributions p_1..p_{γ+1} given to `verify` do
not depend on the prefix, so sampling from the target one token at a time would give independent
Y_i ~ p_i. Speculative sampling outputs a *prefix* of such a sample, (x_1..x_n, t): its first
token is distributed as p_1, and completing the output with fresh independent draws
Y_{n+2} ~ p_{n+2}, ..., Y_{γ+1} ~ p_{γ+1} (what the next steps would sample, since p does not
depend on the prefix) gives a sequence distributed as ∏_i p_i. And since the draft tokens are
independent draws x_i ~ q_i, the number accepted has the law
P(n = k) = β_1 ⋯ β_k (1 − β_{k+1}) for k < γ, P(n = γ) = β_1 ⋯ β_γ, β_i = Σ_x min(p_i(x), q_i(x)).

Threshold. Every test uses a fixed seed, so it is deterministic: under a correct implementation
the chance that the chosen seed gives p-value < 1e-4 is 1e-4 per test, about 1e-3 for all the
chi-squared tests in this file together. A real bug (e.g. drawing the correction from p or q
instead of the residual) moves the p-value far below 1e-10 at N = 20000 (checked below).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import itertools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from chi2 import chi2_pvalue  # noqa: E402  (tests/chi2.py)

import specdec  # noqa: E402
from specdec import sampling as sampling_lib  # noqa: E402
from specdec import verification  # noqa: E402

N = 20000     # Rows = independent runs of the accept/reject step.
V = 6         # Vocabulary.
GAMMA = 3     # Draft tokens per row.
P_MIN = 1e-4  # See the module docstring.


def draw(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
  """n independent draws from a 1-D distribution (float64 renormalised)."""
  probs = np.asarray(probs, np.float64)
  return rng.choice(len(probs), size=n, p=probs / probs.sum())


def run_verify(p: np.ndarray, q: np.ndarray, seed: int, tokens: np.ndarray | None = None):
  """p `[γ+1, V]`, q `[γ, V]` (every row the same); draft tokens x_i ~ q_i unless given.

  Returns numpy (tokens [N, γ], num_accepted [N], next_token [N]).
  """
  rng = np.random.default_rng(seed)
  if tokens is None:
    tokens = np.stack([draw(rng, q[i], N) for i in range(GAMMA)], axis=1)
  num_accepted, next_token = specdec.verify(
      jnp.asarray(tokens, jnp.int32), jnp.broadcast_to(jnp.asarray(q, jnp.float32), (N,) + q.shape),
      jnp.broadcast_to(jnp.asarray(p, jnp.float32), (N,) + p.shape), jax.random.PRNGKey(seed))
  num_accepted, next_token = np.asarray(num_accepted), np.asarray(next_token)
  assert num_accepted.shape == (N,) and next_token.shape == (N,)
  assert num_accepted.dtype == np.int32 and next_token.dtype == np.int32
  assert num_accepted.min() >= 0 and num_accepted.max() <= GAMMA
  assert next_token.min() >= 0 and next_token.max() < V
  return tokens, num_accepted, next_token


def completed_outputs(p, tokens, num_accepted, next_token, seed):
  """The output (x_1..x_n, t) completed with fresh draws Y_j ~ p_j: int `[N, γ+1]`."""
  rng = np.random.default_rng(seed + 1000)
  out = np.stack([draw(rng, p[j], N) for j in range(GAMMA + 1)], axis=1)
  slot = np.arange(GAMMA + 1)[None, :]
  padded = np.concatenate([tokens, np.zeros((N, 1), tokens.dtype)], axis=1)
  out = np.where(slot < num_accepted[:, None], padded, out)
  out = np.where(slot == num_accepted[:, None], next_token[:, None], out)
  return out


def accepted_law(p, q):
  """Exact P(num_accepted = k), k = 0..γ, for independent x_i ~ q_i."""
  beta = np.minimum(p[:GAMMA], q).sum(axis=1)
  law = np.empty(GAMMA + 1)
  for k in range(GAMMA):
    law[k] = np.prod(beta[:k]) * (1.0 - beta[k])
  law[GAMMA] = np.prod(beta)
  return law


def exactness_pvalues(p, q, tokens, num_accepted, next_token, seed) -> dict[str, float]:
  """The p-values of the four exactness statistics of the module docstring."""
  out = completed_outputs(p, tokens, num_accepted, next_token, seed)
  p64 = np.asarray(p, np.float64)
  joint = np.ones(())
  for j in range(GAMMA + 1):
    joint = np.multiply.outer(joint, p64[j])
  # First output token ~ p_1 (x_1 if kept, else the correction); uses no completion draws.
  first = np.where(num_accepted > 0, tokens[:, 0], next_token)
  return {
      "first": chi2_pvalue(np.bincount(first, minlength=V), p64[0]),
      # Joint of the first two output tokens ~ p_1 ⊗ p_2.
      "pair": chi2_pvalue(np.bincount(out[:, 0] * V + out[:, 1], minlength=V * V),
                          np.outer(p64[0], p64[1])),
      # Joint of all γ+1 (completed) tokens ~ ∏ p_i.
      "joint": chi2_pvalue(np.bincount(np.ravel_multi_index(tuple(out.T), (V,) * (GAMMA + 1)),
                                       minlength=V ** (GAMMA + 1)), joint),
      # Number accepted against its exact law.
      "num_accepted": chi2_pvalue(np.bincount(num_accepted, minlength=GAMMA + 1),
                                  accepted_law(p64, q)),
  }


def check_exact(p, q, seed):
  """The exactness checks of the module docstring for p `[γ+1, V]`, q `[γ, V]`."""
  tokens, num_accepted, next_token = run_verify(p, q, seed)
  pvalues = exactness_pvalues(p, q, tokens, num_accepted, next_token, seed)
  for name, pvalue in pvalues.items():
    assert pvalue > P_MIN, f"{name}: p-value {pvalue:.3g}"
  return tokens, num_accepted, next_token


def dirichlet(rng, shape, concentration=1.0):
  return rng.dirichlet(np.full(V, concentration), size=shape).astype(np.float32)


def test_generic_p_and_q():
  rng = np.random.default_rng(0)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  _, num_accepted, _ = check_exact(p, q, seed=1)
  assert 0 < (num_accepted == GAMMA).mean() < 1 and (num_accepted == 0).any()


def test_q_has_zeros_where_p_has_not():
  rng = np.random.default_rng(2)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  q[:, :3] = 0.0  # Tokens 0..2 are never drafted, yet p gives them mass: only the residual can.
  q /= q.sum(axis=1, keepdims=True)
  tokens, num_accepted, next_token = check_exact(p, q, seed=3)
  assert not np.isin(tokens, [0, 1, 2]).any()
  assert np.isin(next_token[num_accepted < GAMMA], [0, 1, 2]).any()


def test_p_has_zeros_where_q_has_not():
  rng = np.random.default_rng(4)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  p[:, 4:] = 0.0  # Draft tokens 4, 5 are always rejected and never output.
  p /= p.sum(axis=1, keepdims=True)
  tokens, num_accepted, next_token = check_exact(p, q, seed=5)
  first = np.where(num_accepted > 0, tokens[:, 0], next_token)
  assert not np.isin(first, [4, 5]).any() and not np.isin(next_token, [4, 5]).any()


def test_p_equals_q_accepts_everything():
  rng = np.random.default_rng(6)
  p = dirichlet(rng, GAMMA + 1)
  tokens, num_accepted, next_token = check_exact(p, p[:GAMMA].copy(), seed=7)
  np.testing.assert_array_equal(num_accepted, GAMMA)  # r q < p = q for every r < 1.
  # All kept: the next token is drawn from p_{γ+1} (no NaN, no fallback to token 0).
  pv = chi2_pvalue(np.bincount(next_token, minlength=V), p[GAMMA].astype(np.float64))
  assert pv > P_MIN, pv


def test_p_equals_q_one_hot_residual_never_nan():
  # Degenerate rows: p = q one-hot; every residual is all-zero and nothing may become NaN.
  p = np.zeros((GAMMA + 1, V), np.float32)
  p[np.arange(GAMMA + 1), [2, 3, 4, 5]] = 1.0
  tokens, num_accepted, next_token = run_verify(p, p[:GAMMA].copy(), seed=8)
  np.testing.assert_array_equal(num_accepted, GAMMA)
  np.testing.assert_array_equal(next_token, 5)


def test_q_one_hot():
  rng = np.random.default_rng(9)
  p = dirichlet(rng, GAMMA + 1)
  q = np.zeros((GAMMA, V), np.float32)
  q[np.arange(GAMMA), [1, 0, 4]] = 1.0  # x_i is fixed; kept with probability p_i(x_i).
  check_exact(p, q, seed=10)


def test_tiny_q_of_the_draft_token():
  """q_i(x_i) = 1e-30: p/q must neither overflow nor lose the ratio.

  The draft tokens are forced (not drawn from q), so this checks the acceptance rule itself:
  x_1 (q = 1e-30, p = 0.3) is always kept; x_2 (q = 1e-30, p = 5e-31) is kept with probability
  exactly 1/2; x_3 (q = 1e-30, p = 0) never.
  """
  rng = np.random.default_rng(11)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  q[:, 0] = 1e-30
  p[0, 0] = 0.3
  p[1, 0] = 5e-31
  p[2, 0] = 0.0
  p /= p.sum(axis=1, keepdims=True)
  q /= q.sum(axis=1, keepdims=True)
  assert np.float32(q[1, 0]) > 0 and np.float32(p[1, 0]) > 0  # Representable in float32.
  tokens = np.zeros((N, GAMMA), np.int32)
  _, num_accepted, next_token = run_verify(p, q, seed=12, tokens=tokens)
  assert num_accepted.min() >= 1  # x_1 always kept.
  assert num_accepted.max() <= 2  # x_3 never kept.
  half = stats.binomtest(int((num_accepted == 2).sum()), N, p[1, 0] / q[1, 0]).pvalue
  assert half > P_MIN, half
  # The correction after rejecting x_2 (resp. x_3) is drawn from norm(max(0, p - q)).
  for n in (1, 2):
    rows = num_accepted == n
    residual = np.maximum(p[n].astype(np.float64) - q[n], 0.0)
    pv = chi2_pvalue(np.bincount(next_token[rows], minlength=V), residual / residual.sum())
    assert pv > P_MIN, (n, pv)


def test_rejection_with_an_empty_residual_draws_from_p():
  """A forced rejection where p ≤ q everywhere up to rounding: the residual max(0, p − q) is all
  zero, and the correction must come from p, never from an empty CDF (which gives token V).

  q = p·(1 + 1e-6) (sums exceed 1 by rounding-sized amounts, as processed float32 laws can), and
  the forced draft token 0 has p = 0 < q, so x_1 is always rejected.
  """
  rng = np.random.default_rng(18)
  p = dirichlet(rng, GAMMA + 1)
  p[:, 0] = 0.0
  p /= p.sum(axis=1, keepdims=True)
  q = (p[:GAMMA] * np.float32(1 + 1e-6)).astype(np.float32)
  q[:, 0] = 1e-6
  assert (np.maximum(p[:GAMMA] - q, 0.0) == 0).all()  # Empty residuals, in float32 too.
  _, num_accepted, next_token = run_verify(p, q, seed=19, tokens=np.zeros((N, GAMMA), np.int32))
  np.testing.assert_array_equal(num_accepted, 0)
  assert next_token.max() < V  # (run_verify checks it as well.)
  pv = chi2_pvalue(np.bincount(next_token, minlength=V), p[0].astype(np.float64))
  assert pv > P_MIN, pv


def test_test_has_power():
  """The same checks reject a sampler that draws the correction from p, or from q."""
  rng = np.random.default_rng(0)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  tokens, num_accepted, _ = run_verify(p, q, seed=1)
  gen = np.random.default_rng(99)
  for wrong in (p, np.concatenate([q, p[GAMMA:]], axis=0)):
    next_token = np.array([draw(gen, wrong[n], 1)[0] for n in num_accepted])
    first = np.where(num_accepted > 0, tokens[:, 0], next_token)
    pv = chi2_pvalue(np.bincount(first, minlength=V), p[0].astype(np.float64))
    assert pv < 1e-10, pv


def _wrong_verify_row(*, accept_with_q=True, p_row=None):
  """`verification.verify_row` with one thing wrong.

  accept_with_q=False: x_i is kept while r_i < p_i(x_i) (q left out of the test).
  p_row(n): the row of p the correction's residual is built from, instead of n (the first
  rejected position).
  """
  def verify_row(draft_tokens, draft_probs, target_probs, key):
    gamma = draft_tokens.shape[0]
    accept_key, residual_key = jax.random.split(key)
    index = jnp.arange(gamma)
    q_x = draft_probs[index, draft_tokens] if accept_with_q else 1.0
    r = jax.random.uniform(accept_key, (gamma,), jnp.float32)
    kept = r * q_x < target_probs[index, draft_tokens]
    n = jnp.sum(jnp.cumprod(kept.astype(jnp.int32))).astype(jnp.int32)
    q_padded = jnp.concatenate([draft_probs, jnp.zeros_like(draft_probs[:1])], axis=0)
    p_next = target_probs[n if p_row is None else p_row(n)]
    residual = jnp.maximum(p_next - q_padded[n], 0.0)
    residual = jnp.where(jnp.sum(residual) > 0, residual, p_next)
    return n, sampling_lib.draw(residual_key, residual)
  return verify_row


@pytest.mark.parametrize("bug, statistic", [
    # The correction's residual always built from p_1: output token 1 is still ~ p_1 (x_1, or a
    # correction at position 1, both right); token 2 is not.
    (_wrong_verify_row(p_row=lambda n: 0), "pair"),
    # Built from p_1 or p_2 (0-based row min(n, 1)): wrong only at output position 3 or later.
    (_wrong_verify_row(p_row=lambda n: jnp.minimum(n, 1)), "joint"),
    (_wrong_verify_row(accept_with_q=False), "num_accepted"),
], ids=["residual_of_p1", "residual_of_p2", "accept_ignores_q"])
def test_each_statistic_rejects_a_wrong_verifier(monkeypatch, bug, statistic):
  """Each statistic of `check_exact` has power of its own: a wrong `verify_row` run through
  `specdec.verify` (monkeypatched) is rejected by it at the seed and size of
  `test_generic_p_and_q`; the pair and joint bugs leave the statistics before them blind."""
  rng = np.random.default_rng(0)
  p, q = dirichlet(rng, GAMMA + 1), dirichlet(rng, GAMMA)
  monkeypatch.setattr(verification, "verify_rows",
                      lambda *args: jax.vmap(bug)(*args))  # Where `verify` finds its rule.
  tokens, num_accepted, next_token = run_verify(p, q, seed=1)
  pvalues = exactness_pvalues(p, q, tokens, num_accepted, next_token, seed=1)
  assert pvalues[statistic] < 1e-10, pvalues
  blind = {"pair": ["first"], "joint": ["first", "pair"], "num_accepted": []}[statistic]
  for name in blind:
    assert pvalues[name] > P_MIN, (name, pvalues)


def test_rows_use_their_own_keys():
  """Row b's result depends only on row b's inputs and fold_in(rng, b)."""
  rng = np.random.default_rng(13)
  p, q = dirichlet(rng, (N, GAMMA + 1)), dirichlet(rng, (N, GAMMA))
  tokens = rng.integers(0, V, (N, GAMMA))
  full = specdec.verify(jnp.asarray(tokens, jnp.int32), jnp.asarray(q), jnp.asarray(p),
                        jax.random.PRNGKey(3))
  # Other rows changed (same shape, so no recompilation): the first 100 rows do not move.
  p2, q2, tokens2 = p.copy(), q.copy(), tokens.copy()
  p2[100:], q2[100:] = p[::-1][:N - 100], q[::-1][:N - 100]
  tokens2[100:] = (tokens[100:] + 1) % V
  other = specdec.verify(jnp.asarray(tokens2, jnp.int32), jnp.asarray(q2), jnp.asarray(p2),
                         jax.random.PRNGKey(3))
  np.testing.assert_array_equal(np.asarray(full[0])[:100], np.asarray(other[0])[:100])
  np.testing.assert_array_equal(np.asarray(full[1])[:100], np.asarray(other[1])[:100])
  assert (np.asarray(full[1])[100:] != np.asarray(other[1])[100:]).any()
  # The same key gives the same result; another key another one.
  again = specdec.verify(jnp.asarray(tokens, jnp.int32), jnp.asarray(q), jnp.asarray(p),
                         jax.random.PRNGKey(3))
  np.testing.assert_array_equal(full[1], again[1])
  fresh = specdec.verify(jnp.asarray(tokens, jnp.int32), jnp.asarray(q), jnp.asarray(p),
                         jax.random.PRNGKey(4))
  assert (np.asarray(full[1]) != np.asarray(fresh[1])).mean() > 0.3
  # ... and it is jittable, with the same result as eager execution.
  jitted = jax.jit(specdec.verify)(jnp.asarray(tokens, jnp.int32), jnp.asarray(q),
                                   jnp.asarray(p), jax.random.PRNGKey(3))
  np.testing.assert_array_equal(full[0], jitted[0])
  np.testing.assert_array_equal(full[1], jitted[1])


def test_bad_shapes_and_dtypes():
  q = jnp.full((2, GAMMA, V), 1.0 / V)
  p = jnp.full((2, GAMMA + 1, V), 1.0 / V)
  tokens = jnp.zeros((2, GAMMA), jnp.int32)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="draft_tokens"):
    specdec.verify(tokens[0], q, p, key)
  with pytest.raises(ValueError, match="draft_probs"):
    specdec.verify(tokens, q[:, :-1], p, key)
  with pytest.raises(ValueError, match="target_probs"):
    specdec.verify(tokens, q, p[:, :-1], key)
  with pytest.raises(ValueError, match="target_probs"):
    specdec.verify(tokens, q, p[..., :-1], key)
  with pytest.raises(TypeError, match="draft_tokens"):
    specdec.verify(tokens.astype(jnp.float32), q, p, key)


# --- greedy ----------------------------------------------------------------------------------


def one_hot_logits(argmaxes, vocab=V):
  """int `[B, k]` → float logits `[B, k, vocab]` with the given argmaxes (and other noise)."""
  argmaxes = np.asarray(argmaxes)
  noise = np.random.default_rng(15).normal(size=argmaxes.shape + (vocab,))
  return jnp.asarray(noise + 10.0 * np.eye(vocab)[argmaxes], jnp.float32)


@pytest.mark.parametrize("draft, target, want_n, want_next", [
    ([2, 3, 4], [2, 3, 4, 5], 3, 5),   # All kept; the next token is argmax p_{γ+1}.
    ([2, 3, 4], [1, 3, 4, 5], 0, 1),   # First wrong: nothing kept; next = argmax p_1.
    ([2, 3, 4], [2, 0, 4, 5], 1, 0),   # Kept while equal, even though x_3 matches p_3 later.
    ([2, 3, 4], [2, 3, 1, 5], 2, 1),
])
def test_verify_greedy_hand_built(draft, target, want_n, want_next):
  n, t = specdec.verify_greedy(jnp.asarray([draft], jnp.int32), one_hot_logits([target]))
  assert n.dtype == jnp.int32 and t.dtype == jnp.int32
  assert (int(n[0]), int(t[0])) == (want_n, want_next)


def test_verify_greedy_batch_matches_brute_force():
  rng = np.random.default_rng(16)
  for gamma in (1, 2, 5):
    draft = rng.integers(0, 3, (64, gamma))  # Small range: many agreements.
    target = rng.integers(0, 3, (64, gamma + 1))
    n, t = specdec.verify_greedy(jnp.asarray(draft, jnp.int32), one_hot_logits(target))
    for b in range(64):
      k = next((i for i in range(gamma) if draft[b, i] != target[b, i]), gamma)
      assert (int(n[b]), int(t[b])) == (k, target[b, k])


def test_accepted_law_matches_brute_force():
  # The closed form of `accepted_law` against enumerating every draft x ∈ V^γ.
  rng = np.random.default_rng(17)
  p = dirichlet(rng, GAMMA + 1).astype(np.float64)
  q = dirichlet(rng, GAMMA).astype(np.float64)
  law = np.zeros(GAMMA + 1)
  for x in itertools.product(range(V), repeat=GAMMA):
    prob_x = np.prod([q[i, x[i]] for i in range(GAMMA)])
    keep = [min(1.0, p[i, x[i]] / q[i, x[i]]) for i in range(GAMMA)]
    for k in range(GAMMA + 1):
      law[k] += prob_x * np.prod(keep[:k]) * (1.0 - keep[k] if k < GAMMA else 1.0)
  np.testing.assert_allclose(accepted_law(p, q), law, atol=1e-12)
