"""The paper's cost model (Section 3), with the verify pass's cost as a measured input.

α: the acceptance rate, E[β] where β_t = Σ_x min(p_t(x), q_t(x)) (Definition 3.1).
c: the cost coefficient, one draft step's time over one target step's time (Definition 3.5).
v(γ): the time of one target pass over γ + 1 tokens over one single-token target step. The paper
  takes v = 1 (an accelerator scoring γ + 1 tokens as fast as one); on a CPU a (γ+1)-row matrix
  product costs several single rows, so v must be measured (see `scripts/verify_cost.py`).

`expected_tokens` is the paper's token rule at fixed γ. Block verification's tokens per call
depend on the joint per-position p and q, not on α alone, and adaptive γ's on where rows stop:
the benchmark reports both measured only (`specdec.benchmarking`), with the token rule's
prediction a lower bound for block verification.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np


def _check_alpha(alpha: float) -> float:
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}")
  return float(alpha)


def _check_gamma(gamma: int) -> int:
  if isinstance(gamma, bool) or not isinstance(gamma, (int, np.integer)) or gamma < 1:
    raise ValueError(f"gamma must be an int >= 1, got {gamma!r}")
  return int(gamma)


def expected_tokens(alpha: float, gamma: int) -> float:
  """Expected tokens per target pass, (1 − α^(γ+1)) / (1 − α) (Equation 1); γ + 1 at α = 1."""
  alpha, gamma = _check_alpha(alpha), _check_gamma(gamma)
  if alpha == 1.0:
    return float(gamma + 1)
  return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def walltime_improvement(alpha: float, gamma: int, c: float, verify_cost: float = 1.0) -> float:
  """Expected speedup over the baseline: (1 − α^(γ+1)) / ((1 − α)(γc + v)).

  verify_cost = 1 is the paper's Theorem 3.8; pass the measured v(γ) for a realistic estimate.
  """
  if not c >= 0:  # Also rejects NaN.
    raise ValueError(f"c must be >= 0, got {c}")
  if not verify_cost > 0:  # Also rejects NaN.
    raise ValueError(f"verify_cost must be > 0, got {verify_cost}")
  return expected_tokens(alpha, gamma) / (_check_gamma(gamma) * c + verify_cost)


def optimal_gamma(alpha: float, c: float,
                  verify_cost: float | Mapping[int, float] | Callable[[int], float] = 1.0,
                  max_gamma: int = 16) -> int:
  """The γ in 1..max_gamma that maximises `walltime_improvement` (v may depend on γ)."""
  def v(gamma: int) -> float:
    if callable(verify_cost):
      return float(verify_cost(gamma))
    if isinstance(verify_cost, Mapping):
      return float(verify_cost[gamma])
    return float(verify_cost)
  gammas = range(1, _check_gamma(max_gamma) + 1)
  return max(gammas, key=lambda g: walltime_improvement(alpha, g, c, v(g)))


def alpha_from_counts(accepted: int, rejected: int) -> float:
  """Maximum-likelihood α from verification outcomes.

  Under the paper's i.i.d. model every draft token is kept with probability α until the first
  rejection; each iteration contributes its kept tokens and at most one rejection, so the
  likelihood is α^accepted (1 − α)^rejected and α̂ = accepted / (accepted + rejected).
  NaN when there is no outcome at all; ValueError for negative counts.
  """
  for name, value in (("accepted", accepted), ("rejected", rejected)):
    if value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}")
  total = accepted + rejected
  return float(accepted) / total if total else float("nan")


def summarize(stats: Any) -> dict[str, float]:
  """Batch totals of `SpeculativeStats` with α̂, tokens per target call and acceptance ratio."""
  totals = {name: int(np.sum(np.asarray(getattr(stats, name))))
            for name in ("target_calls", "draft_calls", "drafted", "accepted", "rejected")}
  calls = totals["target_calls"]
  totals["alpha"] = alpha_from_counts(totals["accepted"], totals["rejected"])
  totals["tokens_per_target_call"] = (totals["accepted"] + calls) / calls if calls else float("nan")
  totals["acceptance_ratio"] = (totals["accepted"] / totals["drafted"] if totals["drafted"]
                                else float("nan"))
  return totals
