"""The paper's lenience (`speculative_generate(..., lenience=l)`, `TokenVerification(l)`).

x_i is kept while r_i < p_i(x_i) / (l·q_i(x_i)); after a rejection the next token is drawn from
norm(max(0, p − l·q)). l = 1 is the exact rule, bit for bit; l < 1 changes the output law to
min(q, p/l) + (1 − β_l)·norm(max(0, p − l·q)) per token (β_l = Σ min(q, p/l)), the formula the
docstrings state: checked here by enumeration, and `verify_rows` against it by χ² (fixed seeds,
p-value 1e-4 per check; the same statistic rejects p itself, so the change is real).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import testing
from specdec.testing import chi2_pvalue, token_decision
from specdec.verification import TokenVerification, choose_rule, verify_rows

N = 20000
P_MIN = 1e-4
V = 6


def lenient_token_law(p, q, lenience):
  """The docstring's closed form for one token."""
  kept = np.minimum(q, p / lenience)
  residual = np.maximum(p - lenience * q, 0.0)
  return kept + (1.0 - kept.sum()) * residual / residual.sum()


@pytest.mark.parametrize("lenience", [0.5, 0.1])
def test_closed_form_by_enumeration(lenience):
  rng = np.random.default_rng(int(lenience * 10))
  for _ in range(5):
    p, q = rng.dirichlet(np.ones(V)), rng.dirichlet(np.ones(V))
    decide = functools.partial(token_decision, lenience=lenience)
    law = testing.law_array(testing.iteration_law(lambda prefix: p, lambda prefix: q, vocab_size=V,
                                                  gamma=1, decide=decide),
                            vocab_size=V, length=2)
    np.testing.assert_allclose(law.sum(1), lenient_token_law(p, q, lenience), atol=1e-12)
    assert np.abs(law.sum(1) - p).sum() > 1e-3  # Not the target's law.
    # α = β_l rises as l falls, toward 1 (always accept) as l → 0.
    assert np.minimum(q, p / lenience).sum() > np.minimum(q, p).sum()


def test_verify_rows_lenient():
  lenience, gamma = 0.4, 3
  rng = np.random.default_rng(1)
  p = rng.dirichlet(np.ones(V), gamma + 1).astype(np.float32)
  q = rng.dirichlet(np.ones(V), gamma).astype(np.float32)
  draws = np.random.default_rng(2)
  tokens = np.stack([draws.choice(V, N, p=q[i] / q[i].sum()) for i in range(gamma)], 1)
  keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.PRNGKey(3), b))(jnp.arange(N))
  n, t = verify_rows(jnp.asarray(tokens, jnp.int32), jnp.broadcast_to(q, (N,) + q.shape),
                     jnp.broadcast_to(p, (N,) + p.shape), keys, lenience=lenience)
  n, t = np.asarray(n), np.asarray(t)
  p64, q64 = p.astype(np.float64), q.astype(np.float64)
  decide = functools.partial(token_decision, lenience=lenience)
  law = testing.decision_law(decide, p64, q64, gamma=gamma, vocab_size=V)
  pv = chi2_pvalue(np.bincount(n * V + t, minlength=(gamma + 1) * V), law)
  assert pv > P_MIN, pv
  first = np.where(n > 0, tokens[:, 0], t)
  counts = np.bincount(first, minlength=V)
  assert chi2_pvalue(counts, lenient_token_law(p64[0], q64[0], lenience)) > P_MIN
  assert chi2_pvalue(counts, p64[0] / p64[0].sum()) < 1e-10  # It changes the output law.
  exact = testing.decision_law(token_decision, p64, q64, gamma=gamma, vocab_size=V)
  assert n.mean() > exact.sum(1) @ np.arange(gamma + 1) + 0.1  # And keeps more.


def test_lenience_one_is_the_default(tiny_target, tiny_draft):
  """lenience = 1 (int or float) is the default rule object, so the same compiled loop and the
  very same tokens; at the verify level too."""
  sampling = specdec.Sampling(temperature=1.0)
  assert choose_rule("token", lenience=1, sampling=sampling) == TokenVerification()
  assert hash(TokenVerification(1)) == hash(TokenVerification(1.0))
  enc = jnp.asarray(np.random.default_rng(0).integers(2, 32, (8, 6)), jnp.int32)
  run = functools.partial(specdec.speculative_generate, tiny_target, tiny_draft, enc, gamma=3,
                          max_decode_len=10, temperature=1.0, rng=jax.random.PRNGKey(2))
  base = run()
  for value in (1, 1.0):
    other = run(lenience=value)
    np.testing.assert_array_equal(np.asarray(other.tokens), np.asarray(base.tokens))
    np.testing.assert_array_equal(other.stats.accepted, base.stats.accepted)
  rng = np.random.default_rng(4)
  p = jnp.asarray(rng.dirichlet(np.ones(V), (64, 4)), jnp.float32)
  q = jnp.asarray(rng.dirichlet(np.ones(V), (64, 3)), jnp.float32)
  x = jnp.asarray(rng.integers(0, V, (64, 3)), jnp.int32)
  keys = jax.vmap(lambda b: jax.random.fold_in(jax.random.PRNGKey(5), b))(jnp.arange(64))
  for a, b in zip(verify_rows(x, q, p, keys), verify_rows(x, q, p, keys, lenience=1.0)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(lenience=0.0), ValueError, "lenience"),
    (dict(lenience=-0.5), ValueError, "lenience"),
    (dict(lenience=1.5), ValueError, "lenience"),
    (dict(lenience=float("nan")), ValueError, "lenience"),
    (dict(lenience="0.5"), TypeError, "lenience"),
    (dict(lenience=True), TypeError, "lenience"),
    (dict(lenience=0.5, verification="block"), ValueError, "lenience"),
    (dict(lenience=0.5, temperature=0.0, rng=None), ValueError, "temperature"),
])
def test_bad_lenience(tiny_target, tiny_draft, kwargs, error, message):
  args = dict(gamma=2, max_decode_len=4, temperature=1.0, rng=0)
  args.update(kwargs)
  with pytest.raises(error, match=message):
    specdec.speculative_generate(tiny_target, tiny_draft, jnp.ones((2, 3), jnp.int32), **args)
