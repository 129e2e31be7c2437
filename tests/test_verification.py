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


def check_exact(p, q, seed):
  """The three exactness checks of the module docstring for p `[γ+1, V]`, q `[γ, V]`."""
  tokens, num_accepted, next_token = run_verify(p, q, seed)
  out = completed_outputs(p, tokens, num_accepted, next_token, seed)
  p64 = np.asarray(p, np.float64)
  # First output token ~ p_1 (x_1 if kept, else the correction); uses no completion draws.
  first = np.where(num_accepted > 0, tokens[:, 0], next_token)
  pv_first = chi2_pvalue(np.bincount(first, minlength=V), p64[0])
  assert pv_first > P_MIN, f"first output token is not ~ p_1: p-value {pv_first:.3g}"
  # Joint of the first two output tokens ~ p_1 ⊗ p_2.
  pairs = np.bincount(out[:, 0] * V + out[:, 1], minlength=V * V)
  pv_pair = chi2_pvalue(pairs, np.outer(p64[0], p64[1]))
  assert pv_pair > P_MIN, f"first two output tokens are not ~ p_1 x p_2: p-value {pv_pair:.3g}"
  # Joint of all γ+1 (completed) tokens ~ ∏ p_i.
  index = np.ravel_multi_index(tuple(out.T), (V,) * (GAMMA + 1))
  joint = np.ones(())
  for j in range(GAMMA + 1):
    joint = np.multiply.outer(joint, p64[j])
  pv_joint = chi2_pvalue(np.bincount(index, minlength=V ** (GAMMA + 1)), joint)
  assert pv_joint > P_MIN, f"completed output is not ~ prod p_i: p-value {pv_joint:.3g}"
  # Number accepted against its exact law.
  pv_n = chi2_pvalue(np.bincount(num_accepted, minlength=GAMMA + 1), accepted_law(p64, q))
  assert pv_n > P_MIN, f"num_accepted does not follow its law: p-value {pv_n:.3g}"
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
