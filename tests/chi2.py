"""The chi-squared goodness-of-fit test the exactness tests share."""

import numpy as np
from scipy import stats


def chi2_pvalue(observed: np.ndarray, expected_probs: np.ndarray) -> float:
  """Chi-squared goodness-of-fit p-value; cells with expected count < 5 are pooled.

  A sample in a cell of probability 0 gives p-value 0 (impossible under the hypothesis).
  """
  observed = np.asarray(observed, np.float64).ravel()
  probs = np.asarray(expected_probs, np.float64).ravel()
  assert np.isclose(probs.sum(), 1.0, atol=1e-5), probs.sum()
  if observed[probs <= 0].sum() > 0:
    return 0.0  # An outcome of probability 0 was sampled: impossible under the hypothesis.
  total = observed.sum()
  expected = probs * total
  small = expected < 5
  obs_cells = list(observed[~small])
  exp_cells = list(expected[~small])
  if small.any() and expected[small].sum() > 0:
    pooled_obs, pooled_exp = observed[small].sum(), expected[small].sum()
    if pooled_exp < 5 and exp_cells:  # Still too small: merge into the smallest large cell.
      i = int(np.argmin(exp_cells))
      obs_cells[i] += pooled_obs
      exp_cells[i] += pooled_exp
    else:
      obs_cells.append(pooled_obs)
      exp_cells.append(pooled_exp)
  if len(exp_cells) < 2:
    return 1.0
  exp_cells = np.asarray(exp_cells)
  exp_cells *= total / exp_cells.sum()  # Guard against float rounding in the sum.
  return float(stats.chisquare(obs_cells, exp_cells).pvalue)
