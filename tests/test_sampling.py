"""specdec.sampling.draw, the inverse-CDF draw every sampled token goes through.

χ² against the exact weights at a fixed seed with the same threshold as test_verification.py
(p-value > 1e-4: a correct sampler fails with probability 1e-4 for a fresh seed), a power check
(the same test rejects a slightly wrong distribution), zero-weight tokens never drawn, and the
ends of the CDF pinned with a mocked uniform.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chi2 import chi2_pvalue
from specdec import sampling

P_MIN = 1e-4
NUM_DRAWS = 40_000

# Unnormalised, with zeros first, inside and last, a tiny weight and a dominant one.
WEIGHTS = np.array([0.0, 3.0, 0.5, 0.0, 1e-3, 7.0, 0.25, 0.0, 2.0, 0.0], np.float32)


@pytest.fixture(scope="module")
def draws():
  keys = jax.random.split(jax.random.PRNGKey(20261126), NUM_DRAWS)
  weights = jnp.broadcast_to(jnp.asarray(WEIGHTS), (NUM_DRAWS, WEIGHTS.size))
  tokens = np.asarray(jax.jit(sampling.sample_rows)(keys, weights))
  assert tokens.dtype == np.int32
  return np.bincount(tokens, minlength=WEIGHTS.size)


def test_draw_matches_the_weights(draws):
  assert chi2_pvalue(draws, WEIGHTS / WEIGHTS.sum()) > P_MIN


def test_chi_squared_has_power(draws):
  # Moving 2% of the mass from token 5 to token 1 must be rejected by the same test.
  wrong = WEIGHTS.astype(np.float64).copy()
  wrong[5] -= 0.02 * WEIGHTS.sum()
  wrong[1] += 0.02 * WEIGHTS.sum()
  assert chi2_pvalue(draws, wrong / wrong.sum()) < 1e-10


def test_zero_weight_tokens_are_never_drawn(draws):
  assert draws[WEIGHTS == 0].sum() == 0


@pytest.mark.parametrize("u, expected", [
    (0.0, 1),                                    # The first token with weight.
    (np.nextafter(np.float32(1), np.float32(0)), 8),  # Top of the CDF: last token with weight.
])
def test_ends_of_the_cdf(monkeypatch, u, expected):
  monkeypatch.setattr(jax.random, "uniform", lambda key, shape, dtype: jnp.full(shape, u, dtype))
  with jax.disable_jit():
    token = sampling.draw(jax.random.PRNGKey(0), jnp.asarray(WEIGHTS))
  assert int(token) == expected


@pytest.mark.parametrize("shape", [(3, 4096), (2, 5, 4096), (4, 100), (3, 32), (1, 320)],
                         ids=lambda s: "x".join(map(str, s)))
def test_argmax_is_jnp_argmax(shape):
  """The chunked argmax picks exactly jnp.argmax's index: the first on ties (within a chunk and
  across chunks), rows of -inf, the first NaN, maxima at either end; coarse values force ties."""
  rs = np.random.RandomState(sum(shape))
  x = np.round(rs.normal(size=shape) * 2) / 2          # Many exact ties.
  rows = x.reshape(-1, shape[-1])
  v = shape[-1]
  rows[0, [v - 1, 0]] = 50.0                          # Tie of the first and last token.
  if len(rows) > 1:
    rows[1, :] = -np.inf
  if len(rows) > 2:
    rows[2, [v // 3, v // 2]] = np.nan                 # The first NaN wins, as in jnp.argmax.
    rows[2, 1] = np.inf
  if len(rows) > 3:
    rows[3, v - 1] = 9.0                               # The maximum in the last chunk alone.
  x = jnp.asarray(rows.reshape(shape), jnp.float32)
  got = jax.jit(sampling.argmax)(x)
  assert got.dtype == jnp.int32 and got.shape == shape[:-1]
  np.testing.assert_array_equal(got, jnp.argmax(x, axis=-1))
  np.testing.assert_array_equal(sampling.argmax(x.astype(jnp.bfloat16)),
                                jnp.argmax(x.astype(jnp.bfloat16), axis=-1))
