"""specdec.comparison (what demo.py and translate.py --compare report) and timing.machine_line.

No timings are checked (no timed tests): the counts, the identity check and the arithmetic of
the totals are.
"""

import os

import numpy as np
import pytest

from specdec import analysis, comparison, generate, speculative_generate, timing


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


def test_machine_line_names_the_cpu_cores_device_and_load():
  info = timing.machine_info([1.25, 1.0, 0.5])
  line = timing.machine_line(info)
  assert info["cpu"] and info["cpu"] in line
  assert f"{os.cpu_count()} cores" in line and info["device"] in line
  assert "load average (1 min) 1.25 before" in line
  assert info["loadavg_before"] == [1.25, 1.0, 0.5] and len(info["loadavg_after"]) == 3
  assert info["xla_flags"] == os.environ.get("XLA_FLAGS", "")
  assert (f"XLA_FLAGS={info['xla_flags']!r}" in line) == bool(info["xla_flags"])
