"""Tests for `specdec.analysis`, the paper's cost model, and α estimated from loop counters."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import math  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from specdec import analysis  # noqa: E402


def test_paper_numbers():
  # Section 3.3's example: α = 0.75, γ = 7, c = 0.02 gives a 3.16× walltime improvement.
  assert round(analysis.walltime_improvement(0.75, 7, 0.02), 2) == 3.16
  # Table 1 (expected tokens per target run): (α, γ) = (0.8, 5) → 3.69; at c = 0 and v = 1 the
  # walltime improvement is that expectation.
  assert round(analysis.expected_tokens(0.8, 5), 2) == 3.69
  assert round(analysis.walltime_improvement(0.8, 5, 0.0), 2) == 3.69
  # Hand-computed values of Equation 1, (1 − α^(γ+1)) / (1 − α), rounded as in Table 1.
  for (alpha, gamma), want in {(0.6, 1): 1.60, (0.6, 3): 2.18, (0.9, 7): 5.70,
                               (0.5, 10): 2.00, (0.7, 5): 2.94}.items():
    assert round(analysis.expected_tokens(alpha, gamma), 2) == want, (alpha, gamma)


@pytest.mark.parametrize("gamma", [1, 2, 7, 20])
def test_expected_tokens_limits(gamma):
  assert analysis.expected_tokens(1.0, gamma) == gamma + 1
  assert analysis.expected_tokens(0.0, gamma) == 1.0
  # Continuity at α → 1 and agreement with the finite sum Σ_{k=0}^{γ} α^k.
  assert math.isclose(analysis.expected_tokens(1 - 1e-9, gamma), gamma + 1, rel_tol=1e-6)
  for alpha in (0.1, 0.5, 0.93):
    assert math.isclose(analysis.expected_tokens(alpha, gamma),
                        sum(alpha ** k for k in range(gamma + 1)), rel_tol=1e-12)


def test_walltime_improvement_formula_and_verify_cost():
  alpha, gamma, c = 0.7, 4, 0.1
  base = analysis.walltime_improvement(alpha, gamma, c)
  assert math.isclose(base, (1 - alpha ** 5) / ((1 - alpha) * (gamma * c + 1)))
  # A target pass over γ+1 tokens costing v single steps divides the speedup by (γc + v)/(γc + 1).
  slow = analysis.walltime_improvement(alpha, gamma, c, verify_cost=2.5)
  assert math.isclose(slow, base * (gamma * c + 1) / (gamma * c + 2.5))
  # α = 1, c = 0: every pass yields γ + 1 tokens for the price of one.
  assert analysis.walltime_improvement(1.0, gamma, 0.0) == gamma + 1


def brute_force_gamma(alpha, c, v, max_gamma):
  scores = {g: analysis.expected_tokens(alpha, g) / (g * c + v(g)) for g in range(1, max_gamma + 1)}
  return max(scores, key=scores.get), scores


@pytest.mark.parametrize("alpha, c", [(0.5, 0.05), (0.75, 0.02), (0.9, 0.01), (0.99, 0.0),
                                      (0.3, 0.3), (0.8, 0.2)])
def test_optimal_gamma_is_the_argmax(alpha, c):
  constant = lambda g: 1.0
  want, scores = brute_force_gamma(alpha, c, constant, 16)
  got = analysis.optimal_gamma(alpha, c, max_gamma=16)
  assert scores[got] == pytest.approx(scores[want], rel=1e-12)
  # A γ-dependent verify cost (CPU-like: a (γ+1)-token pass costs more than one step) moves it.
  cpu = lambda g: 1.0 + 0.3 * g
  want_cpu, scores_cpu = brute_force_gamma(alpha, c, cpu, 16)
  for spec in (cpu, {g: cpu(g) for g in range(1, 17)}):
    got_cpu = analysis.optimal_gamma(alpha, c, verify_cost=spec, max_gamma=16)
    assert scores_cpu[got_cpu] == pytest.approx(scores_cpu[want_cpu], rel=1e-12)


def test_optimal_gamma_responds_to_verify_cost():
  # With v = 1 a near-perfect cheap draft wants the largest γ; with v growing in γ, a small one.
  assert analysis.optimal_gamma(0.99, 0.0, max_gamma=12) == 12
  assert analysis.optimal_gamma(0.99, 0.0, verify_cost=lambda g: 1.0 + g, max_gamma=12) < 12
  assert analysis.optimal_gamma(0.75, 0.02, verify_cost=lambda g: 1.0 + g) == 1
  # Equivalent mapping and callable give the same answer.
  table = {g: 1.0 + 0.2 * g ** 1.5 for g in range(1, 9)}
  assert (analysis.optimal_gamma(0.8, 0.05, verify_cost=table, max_gamma=8)
          == analysis.optimal_gamma(0.8, 0.05, verify_cost=table.__getitem__, max_gamma=8))


@pytest.mark.parametrize("alpha, gamma", [(0.3, 3), (0.75, 5), (0.95, 7)])
def test_alpha_from_counts_recovers_alpha(alpha, gamma):
  """Simulated loop iterations: each draft token kept w.p. α until the first rejection.

  The MLE α̂ = A / (A + R) is asymptotically normal with variance 1 / (m I(α)), where
  I(α) = E[A]/α² + E[R]/(1−α)² is the Fisher information of one iteration
  (E[A] = Σ_{k=1}^{γ} α^k kept tokens, E[R] = 1 − α^γ rejections). A 5-sigma tolerance with a
  fixed seed fails a correct estimator with probability < 1e-6.
  """
  rng = np.random.default_rng(int(alpha * 100) + gamma)
  m = 5000  # Iterations.
  kept = rng.random((m, gamma)) < alpha
  accepted = np.cumprod(kept, axis=1).sum(axis=1)  # Kept until the first rejection.
  rejected = (accepted < gamma).astype(int)
  estimate = analysis.alpha_from_counts(int(accepted.sum()), int(rejected.sum()))
  mean_accepted = sum(alpha ** k for k in range(1, gamma + 1))
  fisher = mean_accepted / alpha ** 2 + (1 - alpha ** gamma) / (1 - alpha) ** 2
  sigma = 1.0 / math.sqrt(m * fisher)
  assert abs(estimate - alpha) < 5 * sigma, (estimate, alpha, sigma)
  # The naive acceptance ratio accepted / drafted is biased low whenever γ > 1 (it counts the
  # tokens after a rejection that were never verified), so α̂ must not equal it.
  naive = accepted.sum() / (m * gamma)
  if gamma > 1:
    assert naive < alpha - 5 * sigma


def test_alpha_from_counts_edges():
  assert analysis.alpha_from_counts(10, 0) == 1.0
  assert analysis.alpha_from_counts(0, 7) == 0.0
  assert math.isnan(analysis.alpha_from_counts(0, 0))
  with pytest.raises(ValueError, match="accepted"):
    analysis.alpha_from_counts(-1, 3)
  with pytest.raises(ValueError, match="rejected"):
    analysis.alpha_from_counts(3, -2)


def test_summarize():
  class Stats:  # Any object with the five per-row counters.
    target_calls = np.array([3, 2])
    draft_calls = np.array([9, 6])
    drafted = np.array([9, 6])
    accepted = np.array([6, 1])
    rejected = np.array([1, 2])
  s = analysis.summarize(Stats())
  assert s["target_calls"] == 5 and s["accepted"] == 7 and s["rejected"] == 3
  assert s["alpha"] == pytest.approx(0.7)
  assert s["tokens_per_target_call"] == pytest.approx(12 / 5)
  assert s["acceptance_ratio"] == pytest.approx(7 / 15)


@pytest.mark.parametrize("call, name", [
    (lambda: analysis.expected_tokens(-0.1, 3), "alpha"),
    (lambda: analysis.expected_tokens(1.5, 3), "alpha"),
    (lambda: analysis.expected_tokens(float("nan"), 3), "alpha"),
    (lambda: analysis.expected_tokens(0.5, 0), "gamma"),
    (lambda: analysis.expected_tokens(0.5, -2), "gamma"),
    (lambda: analysis.expected_tokens(0.5, 2.5), "gamma"),
    (lambda: analysis.expected_tokens(0.5, True), "gamma"),
    (lambda: analysis.walltime_improvement(0.5, 3, -0.01), "c"),
    (lambda: analysis.walltime_improvement(0.5, 3, float("nan")), "c"),
    (lambda: analysis.walltime_improvement(0.5, 3, 0.1, verify_cost=0.0), "verify_cost"),
    (lambda: analysis.walltime_improvement(0.5, 3, 0.1, verify_cost=float("nan")), "verify_cost"),
    (lambda: analysis.walltime_improvement(2.0, 3, 0.1), "alpha"),
    (lambda: analysis.walltime_improvement(0.5, 0, 0.1), "gamma"),
    (lambda: analysis.optimal_gamma(-1.0, 0.1), "alpha"),
    (lambda: analysis.optimal_gamma(0.5, -0.1), "c"),
    (lambda: analysis.optimal_gamma(0.5, 0.1, max_gamma=0), "gamma"),
])
def test_invalid_arguments(call, name):
  with pytest.raises(ValueError, match=name):
    call()
