"""`speculative_generate(..., draft_unroll=k)`: the draft's scan unrolled k steps at a time.

Unrolling changes how XLA schedules the draft's γ − 1 steps, not what they compute, so greedy
output must stay identical to `generate`'s (and to the rolled loop's) for partial, full and
over-full unrolls, and for γ = 1 (an empty scan).
"""

import jax.numpy as jnp
import numpy as np
import pytest

import specdec

MAX_LEN = 12


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(3)
  enc = rng.integers(2, 32, (4, 6))
  enc[1, 4:] = 0
  return jnp.asarray(enc, jnp.int32)


@pytest.fixture(scope="module")
def baseline(tiny_target, prompts):
  return np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                     eos_id=None).tokens)


@pytest.mark.parametrize("gamma, unroll", [(4, 2), (4, 3), (4, 8), (1, 2)])
def test_greedy_identity(tiny_target, tiny_draft, prompts, baseline, gamma, unroll):
  result = specdec.speculative_generate(tiny_target, tiny_draft, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=None, draft_unroll=unroll)
  np.testing.assert_array_equal(np.asarray(result.tokens), baseline)
  np.testing.assert_array_equal(result.stats.draft_calls, gamma * np.asarray(
      result.stats.target_calls))


@pytest.mark.parametrize("value, error", [(0, ValueError), (-2, ValueError), (2.0, TypeError),
                                          (True, TypeError), (None, TypeError)])
def test_bad_draft_unroll(tiny_target, tiny_draft, prompts, value, error):
  with pytest.raises(error, match="draft_unroll"):
    specdec.speculative_generate(tiny_target, tiny_draft, prompts, gamma=2, max_decode_len=4,
                                 draft_unroll=value)
