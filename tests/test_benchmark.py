"""scripts/benchmark.py and specdec.benchmarking: structure and self-consistency of the outputs.

The core runs in-process on a tiny target whose drafts are itself (α = 1) and a bigram; the
script's gin files are checked to bind its `benchmark`. Timings are not checked (no timed
tests); what is checked is that every reported number is finite and consistent with the others: the predicted speedups recomputed from α, c, v with
`specdec.analysis`, α and tokens per call from the raw counts, the measured speedup from the
times, and the decomposition measured/predicted = token factor × cost factor.
"""

import json
import math
import os

import gin
import numpy as np
import pytest

from conftest import load_script
from specdec import BigramDraft, analysis, benchmarking



@pytest.fixture(scope="module")
def micro_run(tiny_target, tmp_path_factory):
  """The benchmark's core on a tiny target with two drafts: itself (α = 1) and a bigram."""
  rng = np.random.default_rng(0)
  vocab = tiny_target.vocab_size
  bigram = BigramDraft.fit([rng.integers(2, vocab, 12) for _ in range(50)], vocab_size=vocab)
  prompts = benchmarking.pad_prompts(rng.integers(2, vocab, (2, 5)), 6)
  setup = benchmarking.TaskSetup(name="toy", target=tiny_target,
                                 drafts={"t5_distilled": tiny_target, "bigram": bigram},
                                 prompts=prompts, notes=["a note"])
  variants = benchmarking.parse_variants([{}, {"verification": "block"},
                                          {"threshold": 0.5, "gammas": [2]}])
  out = benchmarking.run_task(setup, temperatures=[0.0], gammas=[1, 2], batch_sizes=[1],
                              max_decode_len=8, repeats=1, timing_repeats=2, eos_id=None,
                              variants=variants, log=lambda _: None)
  metadata = benchmarking.machine_metadata(os.getloadavg())
  metadata.update(command="pytest", compiles=out["compiles"])
  result = benchmarking.assemble(rows=out["rows"], costs={"toy": out["costs"]},
                                 config={"gammas": [1, 2]}, notes=setup.notes,
                                 metadata=metadata)
  directory = tmp_path_factory.mktemp("benchmark")
  paths = benchmarking.write_outputs(result, str(directory))
  return result, directory, paths


def test_outputs_written_with_every_row(micro_run):
  result, out, paths = micro_run
  assert sorted(os.path.basename(p) for p in paths) == [
      "benchmark.json", "benchmark.md", "speedup_toy_b1.png"]
  with open(out / "benchmark.json") as f:
    saved = json.load(f)
  rows = saved["rows"]
  assert saved["notes"] == ["a note"]
  keys = {(r["draft"], r["temperature"], r["gamma"], r["batch"], r["variant"]) for r in rows}
  # At T=0 the block variant is the token rule's (listed once); adaptive runs at γ = 2 only.
  assert keys == {(d, 0.0, g, 1, v) for d in ("t5_distilled", "bigram")
                  for g, v in ((1, "token"), (2, "token"), (2, "token, adaptive t=0.5"))}
  assert len(rows) == len(keys) == len(result["rows"])
  for name in ("platform", "cpu_count", "loadavg_before", "loadavg_after", "jax", "date",
               "command", "device"):
    assert name in saved["metadata"], name
  # 1 temperature × (baseline + 2 drafts × (2 γ + 1 adaptive)).
  assert saved["metadata"]["compiles"] == 7
  assert (out / "speedup_toy_b1.png").stat().st_size > 1000
  best = [b for b in saved["best"] if b["variant"] == "token"]
  assert sorted(b["draft"] for b in best) == ["bigram", "t5_distilled"]
  for b in best:
    mine = [r for r in rows if r["draft"] == b["draft"] and r["variant"] == "token"]
    assert b["best_gamma"] == max(mine, key=lambda r: r["measured_speedup"])["gamma"]
    assert b["predicted_best_gamma_v"] == max(
        mine, key=lambda r: r["predicted_speedup_v"])["gamma"]
  adaptive = [b for b in saved["best"] if b["variant"] != "token"]
  assert len(adaptive) == 2 and all(b["predicted_best_gamma_v"] is None for b in adaptive)
  md = (out / "benchmark.md").read_text()
  results = md[md.index("## Results"):md.index("## Best γ per setting")]
  table = [line for line in results.splitlines() if line.startswith("| toy | 1 |")]
  assert len(table) == len(rows) and all(line.count("|") == 22 for line in table)
  assert ("| Task | Batch | Draft | Temp | γ | verification | threshold | lenience | α "
          "| tokens/call | drafted/call | c | c₂ | v(γ) |") in md
  assert "identical to `generate`'s: 6 of 6 settings" in md
  assert "## Best fixed γ vs adaptive γ" in md
  assert "## Best γ per setting" in md and "## Where the time goes" in md
  short = [r for r in rows if r["shortfall"]]
  assert md.count("the rest (the loop itself)") == len(short)
  where = md.split("## Where the time goes")[1].split("\n## ")[0]
  table = [line for line in where.splitlines() if line.startswith("|")]
  assert "| loop's own ms/iteration |" in table[0]
  assert len(table) == 2 + len(rows) and all(line.count("|") == 21 for line in table)


def test_self_draft_is_always_accepted(micro_run):
  """The target as its own draft, greedy: α = 1 and γ + 1 tokens per call."""
  for r in micro_run[0]["rows"]:
    if r["draft"] == "t5_distilled" and r["threshold"] is None:
      gamma = r["gamma"]
      assert (r["alpha"], r["tokens_per_call"], r["rejected"]) == (1.0, gamma + 1, 0)
      # eos_id None: 8 tokens per row; ceil(8 / (γ + 1)) iterations per row.
      assert r["iterations"] == 2 * -(-8 // (gamma + 1)) and r["baseline_steps"] == 16
      assert r["predicted_speedup_paper"] == pytest.approx((gamma + 1) / (gamma * r["c"] + 1))


def test_rows_are_finite_and_self_consistent(micro_run):
  result = micro_run[0]
  costs = result["costs"]["toy"][1]
  for r in result["rows"]:
    for name, value in r.items():
      if isinstance(value, float):
        assert math.isfinite(value), (name, r)
    if r["threshold"] is not None:  # Adaptive: measured only (`test_adaptive_rows`).
      assert r["predicted_speedup_v"] is None and r["drafted"] <= r["gamma"] * r["target_calls"]
      continue
    gamma = r["gamma"]
    assert r["c"] == costs["c"][r["draft"]] > 0
    assert r["v"] == costs["v"][gamma] > 0
    assert r["alpha"] == analysis.alpha_from_counts(r["accepted"], r["rejected"])
    assert 0 <= r["alpha"] <= 1
    assert r["drafted"] == gamma * r["target_calls"]
    assert r["rejected"] <= r["target_calls"]
    assert r["tokens_per_call"] == pytest.approx(1 + r["accepted"] / r["target_calls"])
    assert 1 <= r["tokens_per_call"] <= gamma + 1
    assert r["predicted_speedup_paper"] == pytest.approx(
        analysis.walltime_improvement(r["alpha"], gamma, r["c"]), rel=1e-12)
    assert r["predicted_speedup_v"] == pytest.approx(
        analysis.walltime_improvement(r["alpha"], gamma, r["c"], r["v"]), rel=1e-12)
    assert r["measured_speedup"] == pytest.approx(r["baseline_s"] / r["speculative_s"])
    assert r["ratio_v"] == pytest.approx(r["measured_speedup"] / r["predicted_speedup_v"])
    assert r["ratio_v"] == pytest.approx(r["token_factor"] * r["cost_factor"])
    # Whole decodes: 2 prompt groups (batch 1), each paying the fixed cost once on both sides.
    fixed = costs["fixed_s"] / costs["target_step_s"]
    assert costs["fixed_s"] >= 0 and r["fixed_ms_per_decode"] == costs["fixed_s"] * 1e3
    # The draft's 2-token catch-up pass, measured in the loop like c.
    assert r["c2"] == costs["c2"][r["draft"]] > 0
    assert r["catch_up_extra_steps"] == r["c2"] - r["c"]
    per_iteration = r["predicted_cost_in_steps"] + r["catch_up_extra_steps"]
    assert r["predicted_speedup_decode"] == pytest.approx(
        (2 * fixed + r["baseline_steps"]) / (2 * fixed + r["baseline_steps"]
                                             / r["expected_tokens"] * per_iteration))
    assert r["ratio_decode"] == pytest.approx(r["measured_speedup"] / r["predicted_speedup_decode"])
    assert r["measured_speedup"] == pytest.approx(
        r["steps_per_iteration"] / r["cost_per_iteration_in_steps"])
    assert r["predicted_ms_per_iteration"] + r["overhead_ms_per_iteration"] == pytest.approx(
        r["ms_per_iteration"])
    # The residual's parts: the fixed cost over 2 decodes, the catch-up, the loop's own rest.
    assert r["fixed_ms_per_iteration"] == pytest.approx(
        costs["fixed_s"] * 1e3 * 2 / r["iterations"])
    assert r["catch_up_ms_per_iteration"] == pytest.approx(
        r["catch_up_extra_steps"] * r["target_step_ms"])
    assert (r["fixed_ms_per_iteration"] + r["catch_up_ms_per_iteration"]
            + r["loop_overhead_ms_per_iteration"]) == pytest.approx(r["overhead_ms_per_iteration"])
    assert r["baseline_loop_overhead_ms_per_step"] == pytest.approx(
        r["baseline_overhead_ms_per_step"] - costs["fixed_s"] * 1e3 * 2 / r["baseline_steps"])
    assert r["shortfall"] == (r["explanation"] is not None) == (r["ratio_v"] < 0.9)
    # One row at a time (batch 1): the loop runs as many iterations as the target is called.
    assert r["iterations"] == r["target_calls"]
    assert r["baseline_steps"] == 2 * 8  # 2 sentences, max_decode_len each (eos_id None).
    if r["temperature"] == 0:
      assert r["identical_to_baseline"] is True  # Greedy speculative == generate.


def test_adaptive_rows(micro_run):
  """Adaptive rows: draft passes per iteration in [1, γ], no prediction from α but the model's
  speedup from the measured tokens per call, greedy output identical to `generate`'s."""
  for r in micro_run[0]["rows"]:
    if r["threshold"] is None:
      assert r["draft_passes_per_iteration"] == r["gamma"]
      continue
    assert 1 <= r["draft_passes_per_iteration"] <= r["gamma"]
    assert r["speedup_from_measured_tokens"] == pytest.approx(
        r["tokens_per_call"] / (r["draft_passes_per_iteration"] * r["c"] + r["v"]))
    assert r["ratio_v"] is None and r["token_factor"] is None and r["shortfall"] is False
    assert r["predicted_speedup_decode"] is None and r["ratio_decode"] is None
    assert r["identical_to_baseline"] is True


def test_decode_speedup_reduces_to_the_v_aware_model_without_a_fixed_cost():
  assert benchmarking.decode_speedup(3.0, 1.5, steps=40, decodes=4, fixed_in_steps=0.0) == (
      pytest.approx(3.0 / 1.5))
  # A fixed cost paid by both sides pulls the speedup toward 1, the more the shorter the decode.
  short = benchmarking.decode_speedup(3.0, 1.5, steps=10, decodes=1, fixed_in_steps=3.0)
  long = benchmarking.decode_speedup(3.0, 1.5, steps=100, decodes=1, fixed_in_steps=3.0)
  assert 1.0 < short < long < 2.0
  assert short == pytest.approx(13.0 / (3.0 + 10 / 3.0 * 1.5))


def test_variants_and_comparisons():
  """parse_variants checks what speculative_generate would, settings_for applies T=0's rules,
  and comparisons pair the rows they should (synthetic rows, no decoding)."""
  variants = benchmarking.parse_variants([{}, {"verification": "block"},
                                          {"threshold": 0.5, "gammas": [4]},
                                          {"lenience": 0.5, "gammas": [2]}])
  assert [v.label for v in variants] == ["token", "block", "token, adaptive t=0.5",
                                         "token, lenience 0.5"]
  at0 = benchmarking.settings_for([1, 2], variants, 0.0)
  assert [(g, v.label) for g, v in at0] == [(1, "token"), (2, "token"),
                                            (4, "token, adaptive t=0.5")]
  assert len(benchmarking.settings_for([1, 2], variants, 1.0)) == 6
  for bad in ([{"verification": "blocks"}], [{"threshold": 1.5}], [{"lenience": 0}],
              [{"lenience": 0.5, "verification": "block"}], [{"gamma": 2}], [{}, {}],
              [{"gammas": [0]}]):
    with pytest.raises(ValueError, match="variants"):
      benchmarking.parse_variants(bad)
  def row(gamma, verification="token", threshold=None, lenience=1.0, speedup=1.0, tokens=2.0):
    v = benchmarking.Variant(verification, threshold, lenience)
    return dict(task="t", draft="d", temperature=1.0, batch=1, gamma=gamma,
                verification=verification, threshold=threshold, lenience=lenience,
                exact=lenience == 1.0, variant=v.label, measured_speedup=speedup,
                tokens_per_call=tokens, drafted_per_call=gamma, draft_passes_per_iteration=gamma,
                alpha=0.5)
  rows = [row(1, speedup=0.9), row(2, speedup=0.8), row(1, "block", speedup=0.95, tokens=2.1),
          row(4, threshold=0.5, speedup=1.0), row(2, lenience=0.5, tokens=2.5)]
  comp = benchmarking.comparisons(rows)
  (tb,) = comp["token_vs_block"]
  assert tb["gamma"] == 1 and tb["tokens_per_call_gain"] == pytest.approx(0.1)
  (fa,) = comp["fixed_vs_adaptive"]
  assert (fa["fixed_gamma"], fa["adaptive_gamma"], fa["gain"]) == (1, 4, pytest.approx(1 / 0.9))
  assert [c["lenience"] for c in comp["lenience"]] == [1.0, 0.5]
  lines = benchmarking.comparison_markdown(comp)
  assert "## Token vs block verification" in lines and "## α against lenience (NOT exact below 1)" in lines


def test_helpers_and_bad_input():
  assert benchmarking.decode_lengths(np.array([[5, 1, 0], [5, 6, 7], [1, 0, 0]]), eos_id=1,
                                     max_decode_len=3).tolist() == [2, 3, 1]
  assert benchmarking.pad_prompts(np.array([[3, 1]]), 4).tolist() == [[3, 1, 0, 0]]
  with pytest.raises(ValueError, match="input_length"):
    benchmarking.pad_prompts(np.ones((1, 5)), 4)
  with pytest.raises(ValueError, match="kinds"):
    benchmarking.build_drafts(["trigram"], vocab_size=8)
  with pytest.raises(ValueError, match="train_targets"):
    benchmarking.build_drafts(["bigram"], vocab_size=8)
  drafts, notes = benchmarking.build_drafts(["t5_plain", "unigram", "prompt_lookup"],
                                            vocab_size=8, train_targets=[[3, 4, 1]])
  assert list(drafts) == ["unigram", "prompt_lookup"] and "t5_plain" in notes[0]
  model = object()
  drafts, notes = benchmarking.build_drafts(["t5_shared_encoder", "t5_plain"], vocab_size=8,
                                            models={"t5_shared_encoder": model, "t5_plain": None})
  assert drafts == {"t5_shared_encoder": model} and "t5_plain" in notes[0]
  assert benchmarking.jsonable({("a", 2): [np.float32(1.5), float("nan")], 3: np.int64(4)}) == {
      "a:2": [1.5, None], "3": 4}


def test_gin_configs_bind_the_benchmark():
  """full.gin and quick.gin parse against the script's `benchmark` and set what they say."""
  script = load_script("benchmark")
  for name, gammas, batches in (("full", list(range(1, 9)), [1, 8]), ("quick", [1, 3], [1])):
    gin.clear_config()
    try:
      script.gin_utils.parse([f"configs/benchmarks/{name}.gin"], [])
      assert gin.query_parameter("benchmark.gammas") == gammas
      assert gin.query_parameter("benchmark.batch_sizes") == batches
      assert gin.query_parameter("benchmark.temperatures") == [0.0, 1.0]
      assert set(gin.query_parameter("benchmark.drafts")) == set(benchmarking.DRAFT_KINDS)
    finally:
      gin.clear_config()
  gin.clear_config()
  try:  # verification.gin: its variants parse into checked settings.
    script.gin_utils.parse(["configs/benchmarks/verification.gin"], [])
    variants = benchmarking.parse_variants(gin.query_parameter("benchmark.variants"))
    assert {v.verification for v in variants} == {"token", "block"}
    assert any(v.threshold for v in variants) and any(v.lenience < 1 for v in variants)
  finally:
    gin.clear_config()


def test_profile_trace_is_summarized(micro_run, tiny_target, tmp_path):
  """--profile's trace: written, and its top events include the speculative decode."""
  del micro_run  # Compiled the same setting already.
  prompts = np.array([[3, 4, 5, 1, 0, 0]], np.int32)
  out = benchmarking.profile_setting(tiny_target, tiny_target, prompts, gamma=1,
                                     temperature=0.0, max_decode_len=8, out_dir=str(tmp_path),
                                     eos_id=None, runs=2)
  summary = benchmarking.summarize_trace(out)
  totals = [e["total_ms"] for e in summary]
  assert summary and totals == sorted(totals, reverse=True)  # The top events, largest first.
  assert any("speculative_generate" in e["name"] for e in summary)
  assert benchmarking.summarize_trace(str(tmp_path / "nothing")) == []


def test_default_output_dirs_are_git_ignored():
  """A run without --output_dir never overwrites the committed results/."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  script = load_script("benchmark")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  paths = [os.path.join(script.default_output_dir(quick=q), "benchmark.json")
           for q in (False, True)]
  for path in paths:
    assert os.path.relpath(path, repo).split(os.sep)[0] == "runs", path
  if shutil.which("git") is None or not os.path.exists(os.path.join(repo, ".git")):
    pytest.skip("not a git checkout")
  for path in paths:
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=repo,
                          check=False).returncode == 0, f"{path} is not git-ignored"


def test_script_benchmark_with_variants(tiny_target, tmp_path, monkeypatch):
  """scripts/benchmark.py's `benchmark` end to end on a stand-in task: variants parsed, the T=0
  note written, the rows and comparisons saved."""
  script = load_script("benchmark")
  prompts = benchmarking.pad_prompts(np.random.default_rng(1).integers(2, 32, (2, 5)), 6)
  setup = benchmarking.TaskSetup(name="toy", target=tiny_target,
                                 drafts={"t5_distilled": tiny_target}, prompts=prompts)
  monkeypatch.setattr(script, "load_task", lambda name, **kwargs: setup)
  result = script.benchmark(output_dir=str(tmp_path), pairs=["toy"], drafts=["t5_distilled"],
                            temperatures=[0.0], gammas=[1], batch_sizes=[1], num_sentences=2,
                            max_decode_len=8, repeats=1, timing_repeats=2,
                            variants=[{}, {"verification": "block"}])
  assert [r["variant"] for r in result["rows"]] == ["token"]
  assert any("T=0: every rule is the greedy one" in n for n in result["notes"])
  assert result["config"]["variants"][1]["verification"] == "block"
  with open(tmp_path / "benchmark.json") as f:
    assert json.load(f)["comparisons"] == {"token_vs_block": [], "fixed_vs_adaptive": [],
                                           "lenience": []}
  with pytest.raises(ValueError, match="variants"):
    script.benchmark(output_dir=str(tmp_path), pairs=["toy"], variants=[{"lenience": 2.0}])


def test_script_benchmarks_extra_drafts(tiny_target, tiny_draft, tmp_path, monkeypatch):
  """`extra_drafts`: a draft directory of one's own becomes a row of its own."""
  script = load_script("benchmark")
  tiny_draft.save(str(tmp_path / "mine"))
  prompts = benchmarking.pad_prompts(np.random.default_rng(2).integers(2, 32, (2, 5)), 6)
  monkeypatch.setattr(script, "load_task", lambda name, **kwargs: benchmarking.TaskSetup(
      name="toy", target=tiny_target, drafts={}, prompts=prompts))
  result = script.benchmark(output_dir=str(tmp_path / "out"), pairs=["toy"], drafts=[],
                            temperatures=[0.0], gammas=[2], batch_sizes=[1], num_sentences=2,
                            max_decode_len=6, repeats=1, timing_repeats=2,
                            extra_drafts={"mine": str(tmp_path / "mine")})
  assert [r["draft"] for r in result["rows"]] == ["mine"]
  assert any("draft mine" in n for n in result["notes"])
  with pytest.raises(ValueError, match="config.json"):
    script.benchmark(output_dir=str(tmp_path / "x"), pairs=["toy"], drafts=[],
                     extra_drafts={"gone": str(tmp_path / "missing")})


def _hand_row(*, c2, fixed_s):
  """A row from hand-built costs and one timed group: 10 iterations of 12 ms (γ 2, 20 draft
  passes), 30 baseline steps of 5 ms; t1 = 4 ms, c = 0.1, v(2) = 1.5."""
  variant = benchmarking.Variant()
  groups = [dict(baseline_s=0.150, baseline_steps=30, settings={("d", 2, variant): dict(
      seconds=0.120, iterations=10, draft_passes=20, target_calls=10, accepted=10,
      rejected=5, drafted=20, identical=True)})]
  costs = dict(target_step_s=0.004, v={2: 1.5}, c={"d": 0.1}, c2=None if c2 is None else {"d": c2},
               fixed_s=fixed_s)
  return benchmarking.make_row(task="t", draft="d", temperature=0.0, gamma=2, batch=1,
                               costs=costs, groups=groups, compile_s=0.0, variant=variant)


def test_residual_split_into_fixed_catch_up_and_loop():
  """12 ms per iteration vs (2·0.1 + 1.5)·4 = 6.8 ms modelled: a 5.2 ms residual, of which the
  20 ms fixed cost over 10 iterations is 2 ms and the catch-up (0.3 − 0.1)·4 = 0.8 ms, leaving
  2.4 ms for the loop; the baseline's 1 ms per step over t1 is 20/30 ms fixed and 1/3 ms rest."""
  r = _hand_row(c2=0.3, fixed_s=0.020)
  assert r["overhead_ms_per_iteration"] == pytest.approx(5.2)
  assert r["fixed_ms_per_iteration"] == pytest.approx(2.0)
  assert r["catch_up_ms_per_iteration"] == pytest.approx(0.8)
  assert r["loop_overhead_ms_per_iteration"] == pytest.approx(2.4)
  assert r["baseline_loop_overhead_ms_per_step"] == pytest.approx(1 / 3)
  text = benchmarking.explain(r)
  for part in ("residual 5.200 ms/iteration", "spread over iterations 2.000 ms",
               "beyond one step 0.800 ms", "the loop itself) 2.400 ms",
               "after its fixed cost 0.333 ms"):
    assert part in text, (part, text)


def test_residual_parts_not_measured_are_said_so():
  """Costs without c₂ (one-call costs) or without the fixed cost (paper_regime's) name the part
  as not measured rather than printing 0."""
  r = _hand_row(c2=None, fixed_s=None)
  assert r["catch_up_ms_per_iteration"] is None and r["fixed_ms_per_iteration"] is None
  assert r["loop_overhead_ms_per_iteration"] is None
  assert r["baseline_loop_overhead_ms_per_step"] is None
  text = benchmarking.explain(r)
  assert "beyond one step not measured" in text
  assert "spread over iterations not measured" in text
  assert "0.000 ms" not in text
