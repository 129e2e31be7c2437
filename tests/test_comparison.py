"""specdec.comparison (what demo.py and translate.py --compare report) and timing.machine_line.

No timings are checked (no timed tests): the counts, the identity check and the arithmetic of
the totals are.
"""

import os

import numpy as np
import pytest

from specdec import analysis, benchmarking, comparison, generate, speculative_generate, timing


def _row(base, spec, *, accepted, rejected, calls, base_s, spec_s):
  return comparison.Row(baseline_tokens=np.array(base, np.int32),
                        speculative_tokens=np.array(spec, np.int32),
                        stats={"accepted": accepted, "rejected": rejected, "target_calls": calls,
                               "alpha": analysis.alpha_from_counts(accepted, rejected)},
                        baseline_s=base_s, speculative_s=spec_s)


def test_totals_and_report_of_hand_built_rows():
  rows = [_row([5, 6, 1, 0], [5, 6, 1, 0], accepted=2, rejected=1, calls=2, base_s=0.4,
               spec_s=0.2),
          _row([7, 8, 9, 4], [7, 8, 3, 4], accepted=1, rejected=3, calls=3, base_s=0.1,
               spec_s=0.25)]
  assert [r.identical for r in rows] == [True, False]
  assert [r.baseline_steps for r in rows] == [3, 4]  # EOS counts as a step; padding does not.
  total = comparison.totals(rows)
  assert total["identical"] == 1 and total["rows"] == 2
  assert total["alpha"] == analysis.alpha_from_counts(3, 4)
  assert (total["target_calls"], total["baseline_steps"]) == (5, 7)
  assert total["speedup"] == pytest.approx(0.5 / 0.45)
  assert total["median_speedup"] == pytest.approx(1.2)
  lines = comparison.report_lines(total, gamma=3, greedy=True)
  assert lines[0].endswith("identical to the baseline: 1 of 2")
  assert "5 speculative vs 7 baseline steps (29% saved)" in lines[2]
  assert "speedup 1.11x overall, median per sentence 1.20x (gamma=3" in lines[3]
  assert "not compared" in comparison.report_lines(total, gamma=3, greedy=False)[0]
  with pytest.raises(ValueError, match="rows"):
    comparison.totals([])


def test_compare_decodes_each_row_as_the_decoders_do(tiny_target, tiny_draft):
  prompts = np.array([[3, 4, 5, 1], [6, 7, 1, 0]], np.int32)
  seen = []
  rows = comparison.compare(tiny_target, tiny_draft, prompts, gamma=2, max_decode_len=6,
                            repeats=1, eos_id=None, progress=seen.append)
  assert seen == [0, 1]
  for i, row in enumerate(rows):
    spec = speculative_generate(tiny_target, tiny_draft, prompts[i:i + 1], gamma=2,
                                max_decode_len=6, eos_id=None)
    np.testing.assert_array_equal(row.speculative_tokens, spec.tokens[0])
    np.testing.assert_array_equal(
        row.baseline_tokens, generate(tiny_target, prompts[i:i + 1], max_decode_len=6,
                                      eos_id=None).tokens[0])
    assert row.identical and row.stats == spec.stats.summary()
    assert row.baseline_s > 0 and row.speculative_s > 0
  with pytest.raises(ValueError, match="repeats"):
    comparison.compare(tiny_target, tiny_draft, prompts, gamma=2, max_decode_len=6, repeats=0)
  with pytest.raises(ValueError, match="prompts"):
    comparison.compare(tiny_target, tiny_draft, prompts[0], gamma=2, max_decode_len=6)


def test_cost_model_predicts_these_decodes_from_in_loop_costs(tiny_target, tiny_draft):
  """The prediction is the decode-level cost model's at the measured α, from in-loop c, c₂, v
  and the fixed cost; the per-iteration split adds up; the printed lines carry the numbers."""
  prompts = np.array([[3, 4, 5, 1], [6, 7, 1, 0]], np.int32)
  rows = comparison.compare(tiny_target, tiny_draft, prompts, gamma=2, max_decode_len=6,
                            repeats=1, eos_id=None)
  total = comparison.totals(rows)
  costs = comparison.cost_model(tiny_target, tiny_draft, total, gamma=2, position=4,
                                encoder_length=4, repeats=2)
  assert costs["c"] > 0 and costs["c2"] > 0 and costs["v"] > 0 and costs["fixed_ms"] >= 0
  t1 = costs["target_step_ms"]
  per_iteration = costs["c"] + costs["c2"] + costs["v"]  # (γ − 1)c + c₂ + v at γ = 2.
  assert costs["modelled_ms_per_iteration"] == pytest.approx(per_iteration * t1)
  assert costs["predicted_speedup"] == pytest.approx(benchmarking.decode_speedup(
      analysis.expected_tokens(total["alpha"], 2), per_iteration,
      steps=total["baseline_steps"], decodes=2, fixed_in_steps=costs["fixed_ms"] / t1))
  assert costs["predicted_speedup_v"] == pytest.approx(
      analysis.walltime_improvement(total["alpha"], 2, costs["c"], costs["v"]))
  assert costs["measured_over_predicted"] == pytest.approx(
      total["speedup"] / costs["predicted_speedup"])
  assert costs["ms_per_iteration"] == pytest.approx(
      (total["speculative_s"] * 1e3 - 2 * costs["fixed_ms"]) / total["target_calls"])
  assert costs["ms_per_iteration"] - costs["modelled_ms_per_iteration"] == pytest.approx(
      costs["loop_overhead_ms_per_iteration"])
  text = "\n".join(comparison.cost_lines(costs, gamma=2))
  assert f"c2 = {costs['c2']:.3f}" in text and "v(2) = " in text
  assert f"measured/predicted {costs['measured_over_predicted']:.2f}" in text


def test_machine_line_names_the_cpu_cores_device_and_load():
  info = timing.machine_info([1.25, 1.0, 0.5])
  line = timing.machine_line(info)
  assert info["cpu"] and info["cpu"] in line
  assert f"{os.cpu_count()} cores" in line and info["device"] in line
  assert "load average (1 min) 1.25 before" in line
  assert info["loadavg_before"] == [1.25, 1.0, 0.5] and len(info["loadavg_after"]) == 3
  assert info["xla_flags"] == os.environ.get("XLA_FLAGS", "")
  assert (f"XLA_FLAGS={info['xla_flags']!r}" in line) == bool(info["xla_flags"])
