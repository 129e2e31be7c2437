"""scripts/paper_regime.py: the accelerator benchmark at the paper's sizes, run here on tiny
stand-in configs (--tiny) so that the one device call it is written for cannot fail on plumbing.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import TINY, load_script
from specdec import partitioning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def script():
  return load_script("paper_regime")


def _events(output_dir):
  with open(os.path.join(output_dir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_runs_end_to_end_on_tiny_configs(tmp_path):
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
             TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS="--xla_cpu_multi_thread_eigen=false")
  args = [sys.executable, os.path.join(REPO, "scripts", "paper_regime.py"), f"--output_dir={out}",
          "--tiny", "--targets=xxl", "--drafts=small", "--tasks=ende", "--batch_sizes=1",
          "--gammas=2", "--v_gammas=1,2", "--max_decode_len=8", "--input_length=4",
          "--repeats=1", "--timing_repeats=1", "--draft_unroll=2",
          "--command_buffer=+WHILE,+CONDITIONAL"]
  proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  events = _events(out)
  kinds = [e["kind"] for e in events]
  assert kinds[0] == "meta" and kinds[-1] == "end" and "error" not in kinds, kinds
  meta = events[0]
  # The XLA flag reached the environment before JAX started (XLA parsed and accepted it).
  assert "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" in meta["xla_flags"]
  assert meta["git_commit"] and meta["device"].startswith("cpu") and "paper_regime" in meta["command"]
  (row,) = [e for e in events if e["kind"] == "row"]
  assert row["simulated_alpha"] and row["alpha_simulated"] == 0.75 and row["counts_match_replay"]
  assert row["identical_to_baseline"] and row["target"] == "xxl (tiny)"
  assert row["paper"] == {"alpha": 0.75, "gamma": 7, "speedup": 3.4}
  assert row["measured_speedup"] > 0 and row["c"] > 0 and row["v"] > 0
  if meta["draft_unroll_supported"]:
    assert row["draft_unroll"] == 2
  else:
    assert any("draft_unroll=2" in e.get("text", "") for e in events if e["kind"] == "note")
  (costs,) = [e for e in events if e["kind"] == "costs" and e["c"]]
  assert set(costs["v"]) == {"2"} and set(costs["c"]) == {"small"}
  assert {"1"} <= {g for e in events if e["kind"] == "costs" for g in e["v"]}  # the v unit
  (parity,) = [e for e in events if e["kind"] == "parity"]
  assert parity["identical"] and parity["baseline_deterministic"]
  (memory,) = [e for e in events if e["kind"] == "memory"]
  target_bytes = [e["param_bytes"] for e in events if e["kind"] == "init" and
                  e["role"] == "target"][0]
  assert memory["xla"]["argument_size_in_bytes"] >= target_bytes
  assert memory["from_shapes"]["target"]["params"] == target_bytes  # bf16, as stored
  table = (out / "table.md").read_text()
  assert "0.75 (simulated α)" in table and "3.4× (γ=7" in table
  summary = (out / "summary.md").read_text()
  assert "simulated α" in summary and "1 of 1 reruns identical" in summary
  assert "Run finished" in summary


def test_schedule_puts_the_paper_numbers_first(script):
  settings = script.Settings(output_dir="/unused", targets=("xxl", "xl"))
  units = [str(u) for u in script.schedule(settings)]
  assert units[:9] == [
      "xxl/small b=1 γ=7", "xxl/small b=1 γ=5", "xxl/small b=1 γ=3",
      "xxl/base b=1 γ=7", "xxl/base b=1 γ=5", "xxl/small b=8 γ=7",
      "xxl b=1 v(γ) for γ=[1, 2, 4, 6, 8]", "xxl/base b=1 γ=3", "xxl/small b=8 γ=5"]
  per_target = 2 * 2 * 3 + 1
  assert len(units) == len(set(units)) == 2 * per_target
  assert all(u.startswith("xxl") for u in units[:per_target])


def test_command_buffer_flag_and_xla_flags(script):
  assert script.command_buffer_flag("") == "--xla_gpu_enable_command_buffer="
  assert (script.command_buffer_flag("+WHILE, +CONDITIONAL")
          == "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL")
  assert script.command_buffer_flag("FUSION,WHILE").endswith("=FUSION,WHILE")
  with pytest.raises(ValueError, match="prefix"):
    script.command_buffer_flag("+WHILE,FUSION")
  with pytest.raises(ValueError, match="unknown command type 'LOOPS'"):
    script.command_buffer_flag("+LOOPS")
  assert (script.xla_flags("--a=1", command_buffer="", extra="--b=2")
          == "--a=1 --xla_gpu_enable_command_buffer= --b=2")
  assert script.xla_flags("", command_buffer=None, extra="") == ""
  argv = ["prog", "--command_buffer", "+WHILE", "--x", "--extra_xla_flags=--b=2 --c=3"]
  assert script.argv_value(argv, "command_buffer") == "+WHILE"
  assert script.argv_value(argv, "extra_xla_flags") == "--b=2 --c=3"
  assert script.argv_value(argv, "missing") is None
  with pytest.raises(RuntimeError, match="before JAX starts"):  # This process's JAX is running.
    jax.devices()
    script.set_xla_flags("+WHILE", "")


def test_bad_settings_are_named(script):
  with pytest.raises(ValueError, match="targets"):
    script.Settings(output_dir="/o", targets=("xxxl",))
  with pytest.raises(ValueError, match="shipped pair"):
    script.Settings(output_dir="/o", targets=("ende",), drafts=("small",))
  with pytest.raises(ValueError, match="alpha"):
    script.Settings(output_dir="/o", alpha=1.2)
  with pytest.raises(ValueError, match="gammas"):
    script.Settings(output_dir="/o", gammas=(0,))
  with pytest.raises(ValueError, match="command_buffer"):
    script.Settings(output_dir="/o", command_buffer="+NOPE")
  assert script.alphas_for(script.Settings(output_dir="/o"), "base") == {"ende": 0.80,
                                                                          "cnndm": 0.73}
  assert script.alphas_for(script.Settings(output_dir="/o", alpha=0.5), "small") == {
      "alpha=0.5": 0.5}


def test_time_budget_stops_cleanly_and_a_torn_line_is_survived(script, tmp_path):
  settings = script.Settings(output_dir=str(tmp_path), tiny=True, targets=("xxl",),
                             drafts=("small",), time_budget_s=0.0)
  text = script.run(settings)
  events = _events(tmp_path)
  assert [e["kind"] for e in events] == ["meta"] + ["skipped"] * 7 + ["end"]
  assert "## Skipped" in text and "time budget" in text and "Run finished" in text
  with open(tmp_path / "results.jsonl", "a") as f:
    f.write('{"kind": "row", "trunc')  # What a killed run can leave behind.
  assert "unreadable line" in script.summarize(str(tmp_path))


def test_sharded_initializer_stores_bfloat16_values_of_the_float32_init(tiny_target):
  mesh = partitioning.make_mesh(1, 1, devices=jax.devices()[:1])
  model = partitioning.init_sharded(TINY, mesh, 0, param_dtype="bfloat16")
  for got, want in zip(jax.tree_util.tree_leaves(model.params),
                       jax.tree_util.tree_leaves(tiny_target.params)):
    assert got.dtype == jax.numpy.bfloat16
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want.astype(got.dtype)))
