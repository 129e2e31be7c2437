"""The benchmark behind `scripts/benchmark.py`: the paper's Tables 2–3 on our models, measured.

For one task (a target, its drafts, fixed-shape prompts) and every (batch, temperature, draft, γ)
setting this measures, in one process and on the same prompts:

  * α (MLE from the verification counts, `analysis.alpha_from_counts`) and tokens per target call;
  * c, one draft step over one target step (`timing.measure_cost_ratio`), and v(γ), one
    (γ+1)-token target pass over one 1-token pass (`timing.measure_block_times`);
  * the cost model's predicted speedup, in the paper's form (v = 1) and v-aware (v = v(γ));
  * the measured speedup of `speculative_generate` over `generate`: every setting of one
    (batch, temperature) is timed in interleaved rounds with the baseline (`timing.
    interleaved_medians`), per prompt group (one sentence at batch 1, 8 at batch 8), medians over
    rounds, summed over groups. Every function is compiled by an untimed call first.

And where the time goes: with I loop iterations (target calls) and S baseline steps,

    measured speedup = (S / I) / (time per iteration / time per baseline step)
    measured / predicted (v-aware) = token_factor × cost_factor, where
      token_factor = (S / I) / expected_tokens(α, γ)   (tokens realised per iteration vs Eq. 1)
      cost_factor  = (γc + v) / (time per iteration / time per baseline step).

The loop's own overhead is the residual time per iteration − (γc + v) × t₁ (t₁: one cached
target step, measured alone), and likewise per baseline step − t₁ for `generate`. At T > 0 the
baseline and speculative samples differ, so S and I count the lengths of different samples
(noisy over few sentences; their expectations agree since both sample the same distribution).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from specdec import analysis, timing
from specdec.decoding import generate
from specdec.drafts import BigramDraft, Draft, PromptLookupDraft, UnigramDraft
from specdec.speculative import speculative_generate

# The drafts of issue D, in table order.
DRAFT_KINDS = ("t5_plain", "t5_distilled", "bigram", "unigram", "prompt_lookup")
DRAFT_LABELS = {"t5_plain": "T5 draft (plain)", "t5_distilled": "T5 draft (distilled)",
                "bigram": "bigram", "unigram": "unigram", "prompt_lookup": "prompt lookup"}
SHORTFALL = 0.9  # measured/predicted below this gets an explanation (the 10%).


@dataclasses.dataclass
class TaskSetup:
  """What one task's benchmark needs.

  name: the task (e.g. "specdec_ende").
  target: the target model.
  drafts: draft kind → draft (any `specdec.drafts.Draft`), in table order.
  prompts: int32 `[N, input_length]` encoder inputs, 0-padded to one fixed length.
  notes: things worth saying in the report (e.g. a draft that is missing).
  """
  name: str
  target: Any
  drafts: dict[str, Draft]
  prompts: np.ndarray
  notes: list[str] = dataclasses.field(default_factory=list)


def pad_prompts(tokens: np.ndarray, input_length: int) -> np.ndarray:
  """int `[N, S]` (S ≤ input_length) → int32 `[N, input_length]`, 0-padded on the right."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [N, S], got shape {tokens.shape}")
  if tokens.shape[1] > input_length:
    raise ValueError(f"tokens are {tokens.shape[1]} long, more than input_length={input_length}")
  return np.pad(tokens, ((0, 0), (0, input_length - tokens.shape[1]))).astype(np.int32)


def build_drafts(kinds: Sequence[str], *, vocab_size: int, t5_plain: Any = None,
                 t5_distilled: Any = None, train_targets: Iterable[Any] | None = None,
                 ) -> tuple[dict[str, Draft], list[str]]:
  """The drafts named in `kinds` (see `DRAFT_KINDS`), and notes on those skipped.

  Args:
    kinds: draft kinds, in the order wanted.
    vocab_size: the target's vocabulary size.
    t5_plain, t5_distilled: T5 drafts (None = not available; the kind is skipped with a note).
    train_targets: decoder-side token sequences (EOS included) to fit the bigram/unigram drafts.
  """
  unknown = [k for k in kinds if k not in DRAFT_KINDS]
  if unknown:
    raise ValueError(f"kinds: unknown draft kinds {unknown}; known: {list(DRAFT_KINDS)}")
  needs_fit = any(k in ("bigram", "unigram") for k in kinds)
  sequences = list(train_targets) if (needs_fit and train_targets is not None) else None
  if needs_fit and not sequences:
    raise ValueError("train_targets are needed to fit the bigram/unigram drafts")
  drafts, notes = {}, []
  for kind in kinds:
    if kind in ("t5_plain", "t5_distilled"):
      model = t5_plain if kind == "t5_plain" else t5_distilled
      if model is None:
        notes.append(f"draft {kind} skipped: no such checkpoint in this installation")
        continue
      drafts[kind] = model
    elif kind == "bigram":
      drafts[kind] = BigramDraft.fit(sequences, vocab_size=vocab_size)
    elif kind == "unigram":
      drafts[kind] = UnigramDraft.fit(sequences, vocab_size=vocab_size)
    else:
      drafts[kind] = PromptLookupDraft(vocab_size=vocab_size)
  return drafts, notes


def decode_lengths(tokens: Any, *, eos_id: int | None, max_decode_len: int) -> np.ndarray:
  """Steps `generate` spends per row: index of the first EOS + 1, else max_decode_len."""
  tokens = np.asarray(tokens)
  if eos_id is None:
    return np.full(tokens.shape[0], max_decode_len)
  is_eos = tokens == eos_id
  return np.where(is_eos.any(1), is_eos.argmax(1) + 1, max_decode_len)


def _groups(prompts: np.ndarray, batch: int) -> list[np.ndarray]:
  if prompts.shape[0] < batch:
    raise ValueError(f"batch {batch} needs at least {batch} prompts, got {prompts.shape[0]}")
  return [prompts[i:i + batch] for i in range(0, prompts.shape[0] - batch + 1, batch)]


def _finite(x: float) -> float | None:
  return float(x) if x is not None and math.isfinite(x) else None


def measure_costs(target: Any, drafts: Mapping[str, Draft], *, batch: int,
                  gammas: Sequence[int], position: int, encoder_length: int,
                  repeats: int, fill: bool = True, room: int | None = None) -> dict[str, Any]:
  """t₁ (seconds of one cached target step), v(γ) and c per draft at this batch size
  (`fill`, `room`: see `timing.measure_block_times`; one room for all calls on a model compiles
  its start and single-token step once)."""
  sizes = [1] + [g + 1 for g in gammas]
  room = room or max(sizes)
  times = timing.measure_block_times(target, batch=batch, sizes=sizes, position=position,
                                     repeats=repeats, encoder_length=encoder_length, fill=fill,
                                     room=room)
  c = {name: timing.measure_cost_ratio(target, draft, batch=batch, position=position,
                                       repeats=repeats, encoder_length=encoder_length, fill=fill,
                                       room=room)
       for name, draft in drafts.items()}
  return {"target_step_s": times[1], "block_s": {k: times[k] for k in sizes},
          "v": {g: times[g + 1] / times[1] for g in gammas}, "c": c}


def _capture(fn: Callable[[], Any], box: dict, key: Any) -> Callable[[], Any]:
  def run():
    box[key] = fn()
    return box[key]
  return run


def time_unit(target: Any, drafts: Mapping[str, Draft], prompts: np.ndarray, *, batch: int,
              temperature: float, gammas: Sequence[int], max_decode_len: int, repeats: int,
              seed: int, eos_id: int | None = 1,
              progress: Callable[[str], None] | None = None,
              speculative_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Times the baseline and every (draft, γ) on the prompt groups of one (batch, temperature).

  `speculative_kwargs` are extra keyword arguments of every `speculative_generate` call.
  Returns {"compile_s": {key: s}, "groups": [{"baseline_s", "baseline_steps", "settings":
  {(draft, γ): {"seconds", "iterations", counts..., "identical"}}}]}; key "baseline" or (draft, γ).
  """
  rng = jax.random.PRNGKey(seed) if temperature > 0 else None
  common = dict(max_decode_len=max_decode_len, temperature=temperature, rng=rng, eos_id=eos_id)
  extra = dict(speculative_kwargs or {})

  def fns_for(group):
    fns = {"baseline": lambda: generate(target, group, **common)}
    for name, draft in drafts.items():
      for g in gammas:
        fns[(name, g)] = (lambda d, g: lambda: speculative_generate(
            target, d, group, gamma=g, **common, **extra))(draft, g)
    return fns

  groups = _groups(prompts, batch)
  compile_s = {}
  for key, fn in fns_for(groups[0]).items():  # Compile (untimed for the results).
    start = time.perf_counter()
    jax.block_until_ready(fn())
    compile_s[key] = time.perf_counter() - start
  out = []
  for i, group in enumerate(groups):
    box = {}
    fns = {key: _capture(fn, box, key) for key, fn in fns_for(group).items()}
    medians = timing.interleaved_medians(fns, repeats=repeats, warmup=0)
    base_tokens = np.asarray(box["baseline"].tokens)
    settings = {}
    for key, seconds in medians.items():
      if key == "baseline":
        continue
      result = box[key]
      stats = {name: np.asarray(getattr(result.stats, name))
               for name in ("target_calls", "accepted", "rejected", "drafted")}
      settings[key] = dict(
          seconds=seconds, iterations=int(stats["target_calls"].max()),
          target_calls=int(stats["target_calls"].sum()), accepted=int(stats["accepted"].sum()),
          rejected=int(stats["rejected"].sum()), drafted=int(stats["drafted"].sum()),
          identical=bool(np.array_equal(np.asarray(result.tokens), base_tokens)))
    out.append(dict(baseline_s=medians["baseline"], settings=settings, baseline_steps=int(
        decode_lengths(base_tokens, eos_id=eos_id, max_decode_len=max_decode_len).max())))
    if progress:
      progress(f"group {i + 1}/{len(groups)}")
  return {"compile_s": compile_s, "groups": out}


def explain(row: Mapping[str, Any]) -> str:
  """Where a setting's time goes, in words (the decomposition in the module docstring)."""
  return (f"measured/predicted {row['ratio_v']:.2f} = token factor {row['token_factor']:.2f} "
          f"({row['steps_per_iteration']:.2f} baseline steps per iteration realised vs "
          f"{row['expected_tokens']:.2f} expected from alpha) x cost factor "
          f"{row['cost_factor']:.2f} (an iteration cost {row['cost_per_iteration_in_steps']:.2f} "
          f"baseline steps vs gamma*c+v = {row['predicted_cost_in_steps']:.2f}); loop overhead "
          f"{row['overhead_ms_per_iteration']:.3f} ms/iteration "
          f"({row['overhead_share']:.0%} of {row['ms_per_iteration']:.3f} ms) vs "
          f"{row['baseline_overhead_ms_per_step']:.3f} ms per baseline step "
          f"(t1 = {row['target_step_ms']:.3f} ms)")


def make_row(*, task: str, draft: str, temperature: float, gamma: int, batch: int,
             costs: Mapping[str, Any], groups: Sequence[Mapping[str, Any]],
             compile_s: float) -> dict[str, Any]:
  """One table row from the costs of its batch size and its timed groups (see `time_unit`)."""
  key = (draft, gamma)
  per = [g["settings"][key] for g in groups]
  total = lambda name: sum(p[name] for p in per)
  accepted, rejected = total("accepted"), total("rejected")
  calls, iterations = total("target_calls"), total("iterations")
  base_s = sum(g["baseline_s"] for g in groups)
  spec_s = total("seconds")
  steps = sum(g["baseline_steps"] for g in groups)
  alpha = analysis.alpha_from_counts(accepted, rejected)
  c, v, t1 = costs["c"][draft], costs["v"][gamma], costs["target_step_s"]
  expected = analysis.expected_tokens(alpha, gamma)
  row = dict(
      task=task, draft=draft, temperature=float(temperature), gamma=int(gamma), batch=int(batch),
      num_groups=len(groups), accepted=accepted, rejected=rejected, drafted=total("drafted"),
      target_calls=calls, alpha=alpha, tokens_per_call=(accepted + calls) / calls,
      expected_tokens=expected, c=c, v=v,
      predicted_speedup_paper=analysis.walltime_improvement(alpha, gamma, c),
      predicted_speedup_v=analysis.walltime_improvement(alpha, gamma, c, v),
      baseline_s=base_s, speculative_s=spec_s, measured_speedup=base_s / spec_s,
      median_group_speedup=float(np.median([g["baseline_s"] / p["seconds"]
                                            for g, p in zip(groups, per)])),
      iterations=iterations, baseline_steps=steps,
      target_step_ms=t1 * 1e3, ms_per_iteration=spec_s * 1e3 / iterations,
      ms_per_baseline_step=base_s * 1e3 / steps,
      predicted_cost_in_steps=gamma * c + v,
      predicted_ms_per_iteration=(gamma * c + v) * t1 * 1e3,
      identical_to_baseline=(all(p["identical"] for p in per) if temperature == 0 else None),
      compile_s=compile_s)
  row["ratio_paper"] = row["measured_speedup"] / row["predicted_speedup_paper"]
  row["ratio_v"] = row["measured_speedup"] / row["predicted_speedup_v"]
  row["steps_per_iteration"] = steps / iterations
  row["cost_per_iteration_in_steps"] = row["ms_per_iteration"] / row["ms_per_baseline_step"]
  row["token_factor"] = row["steps_per_iteration"] / expected
  row["cost_factor"] = row["predicted_cost_in_steps"] / row["cost_per_iteration_in_steps"]
  row["overhead_ms_per_iteration"] = row["ms_per_iteration"] - row["predicted_ms_per_iteration"]
  row["overhead_share"] = row["overhead_ms_per_iteration"] / row["ms_per_iteration"]
  row["baseline_overhead_ms_per_step"] = row["ms_per_baseline_step"] - row["target_step_ms"]
  row["shortfall"] = row["ratio_v"] < SHORTFALL
  row["explanation"] = explain(row) if row["shortfall"] else None
  return row


def run_task(setup: TaskSetup, *, temperatures: Sequence[float], gammas: Sequence[int],
             batch_sizes: Sequence[int], max_decode_len: int, repeats: int,
             timing_repeats: int, seed: int = 0, eos_id: int | None = 1,
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Every row of one task: batch × temperature × draft × γ (see the module docstring).

  Returns {"rows": [...], "costs": {batch: costs}, "compiles": n, "compile_s": total}.
  """
  gammas = sorted({int(g) for g in gammas})
  if not gammas or gammas[0] < 1:
    raise ValueError(f"gammas must be ints >= 1, got {gammas}")
  if repeats < 1 or timing_repeats < 1:
    raise ValueError(f"repeats and timing_repeats must be >= 1, got {repeats}, {timing_repeats}")
  if not setup.drafts:
    raise ValueError(f"task {setup.name}: no drafts to benchmark")
  prompts = np.asarray(setup.prompts, np.int32)
  rows, all_costs, compiles, compile_total = [], {}, 0, 0.0
  for batch in batch_sizes:
    start = time.perf_counter()
    costs = measure_costs(setup.target, setup.drafts, batch=batch, gammas=gammas,
                          position=max_decode_len // 2, encoder_length=prompts.shape[1],
                          repeats=timing_repeats)
    all_costs[batch] = costs
    log(f"[{setup.name}] batch {batch}: t1 {costs['target_step_s'] * 1e3:.3f} ms, "
        f"v {', '.join(f'{g}:{v:.2f}' for g, v in costs['v'].items())}, "
        f"c {', '.join(f'{k}:{c:.3f}' for k, c in costs['c'].items())} "
        f"({time.perf_counter() - start:.0f} s)")
    for temperature in temperatures:
      start = time.perf_counter()
      unit = time_unit(setup.target, setup.drafts, prompts, batch=batch,
                       temperature=temperature, gammas=gammas, max_decode_len=max_decode_len,
                       repeats=repeats, seed=seed, eos_id=eos_id)
      compiles += len(unit["compile_s"])
      compile_total += sum(unit["compile_s"].values())
      for draft in setup.drafts:
        for gamma in gammas:
          row = make_row(task=setup.name, draft=draft, temperature=temperature, gamma=gamma,
                         batch=batch, costs=costs, groups=unit["groups"],
                         compile_s=unit["compile_s"][(draft, gamma)])
          rows.append(row)
          log(f"  T={temperature:g} b={batch} {draft:>13} γ={gamma}: α {row['alpha']:.2f}, "
              f"tok/call {row['tokens_per_call']:.2f}, measured {row['measured_speedup']:.2f}x, "
              f"predicted {row['predicted_speedup_v']:.2f}x (v), "
              f"{row['predicted_speedup_paper']:.2f}x (paper)")
      log(f"[{setup.name}] batch {batch} T={temperature:g}: {len(unit['compile_s'])} compiles "
          f"{sum(unit['compile_s'].values()):.0f} s, total {time.perf_counter() - start:.0f} s")
  return {"rows": rows, "costs": all_costs, "compiles": compiles, "compile_s": compile_total}


def best_gamma_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per (task, draft, temperature, batch): the γ with the best measured speedup, and the γ the
  cost model would pick (paper and v-aware) among the γ measured."""
  settings: dict[tuple, list] = {}
  for row in rows:
    settings.setdefault((row["task"], row["draft"], row["temperature"], row["batch"]),
                        []).append(row)
  out = []
  for (task, draft, temperature, batch), group in settings.items():
    best = max(group, key=lambda r: r["measured_speedup"])
    pred_v = max(group, key=lambda r: r["predicted_speedup_v"])
    pred_p = max(group, key=lambda r: r["predicted_speedup_paper"])
    out.append(dict(task=task, draft=draft, temperature=temperature, batch=batch,
                    best_gamma=best["gamma"], alpha=best["alpha"],
                    measured_speedup=best["measured_speedup"],
                    predicted_speedup_v=best["predicted_speedup_v"],
                    ratio_v=best["ratio_v"], predicted_best_gamma_v=pred_v["gamma"],
                    predicted_best_gamma_paper=pred_p["gamma"],
                    measured_at_predicted_gamma_v=pred_v["measured_speedup"]))
  return out


def _fmt(x: Any, digits: int = 2) -> str:
  if x is None:
    return "–"
  if isinstance(x, float):
    return f"{x:.{digits}f}" if math.isfinite(x) else "nan"
  return str(x)


def markdown(result: Mapping[str, Any]) -> str:
  """The report: metadata, the Tables 2–3-shaped table, best γ, where the time goes."""
  meta, rows = result["metadata"], result["rows"]
  lines = [f"# Speculative decoding benchmark ({meta['date']})", "",
           f"- command: `{meta['command']}`"
           + (f" (commit {meta['git_commit'][:10]})" if meta.get("git_commit") else ""),
           f"- machine: {meta['platform']}, {meta.get('cpu', '?')}, {meta['cpu_count']} CPUs, "
           f"jax {meta['jax']} on "
           f"{meta['device']}, load average (1 min) {_fmt(meta['loadavg_before'][0])} before / "
           f"{_fmt(meta['loadavg_after'][0])} after",
           f"- settings: {result['config']}", ""]
  lines += [f"- note: {n}" for n in result.get("notes", [])]
  greedy = [r for r in rows if r["identical_to_baseline"] is not None]
  if greedy:
    same = sum(bool(r["identical_to_baseline"]) for r in greedy)
    lines.append(f"- greedy (T=0) speculative outputs identical to `generate`'s: {same} of "
                 f"{len(greedy)} settings")
  lines += ["", "Speedup = baseline `generate` time / `speculative_generate` time on the same "
            "prompts (medians of interleaved runs, compile excluded). Predicted: the cost "
            "model (1 − α^(γ+1)) / ((1 − α)(γc + v)) with v = 1 (paper) or the measured v(γ).", "",
            "## Results", "",
            "| Task | Batch | Draft | Temp | γ | α | tokens/call | c | v(γ) | predicted (paper) "
            "| predicted (v-aware) | measured | measured/predicted (paper) "
            "| measured/predicted (v-aware) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['task']} | {r['batch']} | {DRAFT_LABELS.get(r['draft'], r['draft'])} | "
                 f"{r['temperature']:g} | {r['gamma']} | {_fmt(r['alpha'])} | "
                 f"{_fmt(r['tokens_per_call'])} | {_fmt(r['c'], 3)} | {_fmt(r['v'])} | "
                 f"{_fmt(r['predicted_speedup_paper'])}x | {_fmt(r['predicted_speedup_v'])}x | "
                 f"{_fmt(r['measured_speedup'])}x | {_fmt(r['ratio_paper'])} | "
                 f"{_fmt(r['ratio_v'])} |")
  lines += ["", "## Best γ per setting", "",
            "| Task | Batch | Draft | Temp | best γ (measured) | α | measured | predicted (v-aware) "
            "| measured/predicted | model's γ (v-aware) | model's γ (paper) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
  for b in result["best"]:
    lines.append(f"| {b['task']} | {b['batch']} | {DRAFT_LABELS.get(b['draft'], b['draft'])} | "
                 f"{b['temperature']:g} | {b['best_gamma']} | {_fmt(b['alpha'])} | "
                 f"{_fmt(b['measured_speedup'])}x | {_fmt(b['predicted_speedup_v'])}x | "
                 f"{_fmt(b['ratio_v'])} | {b['predicted_best_gamma_v']} | "
                 f"{b['predicted_best_gamma_paper']} |")
  lines += ["", "## Where the time goes", "",
            "Per iteration (one target call): measured ms vs the model's (γc + v(γ)) × t1 "
            "(t1 = one cached target step measured alone); the loop's overhead is the residual. "
            "Baseline: ms per `generate` step and its overhead over t1. measured/predicted = "
            "token factor × cost factor.", "",
            "| Task | Batch | Draft | Temp | γ | iterations | ms/iteration | predicted ms/iteration "
            "| overhead ms/iteration | baseline ms/step | t1 ms | steps/iteration | "
            "expected tokens | token factor | cost factor |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['task']} | {r['batch']} | {DRAFT_LABELS.get(r['draft'], r['draft'])} | "
                 f"{r['temperature']:g} | {r['gamma']} | {r['iterations']} | "
                 f"{_fmt(r['ms_per_iteration'], 3)} | {_fmt(r['predicted_ms_per_iteration'], 3)} "
                 f"| {_fmt(r['overhead_ms_per_iteration'], 3)} | "
                 f"{_fmt(r['ms_per_baseline_step'], 3)} | {_fmt(r['target_step_ms'], 3)} | "
                 f"{_fmt(r['steps_per_iteration'])} | {_fmt(r['expected_tokens'])} | "
                 f"{_fmt(r['token_factor'])} | {_fmt(r['cost_factor'])} |")
  short = [r for r in rows if r["shortfall"]]
  lines += ["", f"## Settings more than {1 - SHORTFALL:.0%} short of the v-aware prediction "
            f"({len(short)} of {len(rows)})", ""]
  for r in short:
    lines.append(f"- {r['task']} b={r['batch']} {r['draft']} T={r['temperature']:g} "
                 f"γ={r['gamma']}: {r['explanation']}")
  if result.get("profile"):
    lines += ["", "## Profile", "", f"Trace of {result.get('profile_setting', 'one setting')}: "
              f"`{result['profile']}` (open the .trace.json.gz in Perfetto). Top events by "
              "total time (Python frames start with $):", "", "| event | total ms | count |",
              "|---|---|---|"]
    for e in result.get("profile_summary", []):
      lines.append(f"| `{e['name'][:90]}` | {e['total_ms']:.2f} | {e['count']} |")
  return "\n".join(lines) + "\n"


def plot(rows: Sequence[Mapping[str, Any]], path_prefix: str) -> list[str]:
  """Speedup vs γ, measured against predicted, one panel per draft (columns) and temperature
  (rows); one PNG per (task, batch). Returns the paths written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for task, batch in sorted({(r["task"], r["batch"]) for r in rows}):
    sub = [r for r in rows if r["task"] == task and r["batch"] == batch]
    drafts = list(dict.fromkeys(r["draft"] for r in sub))
    temps = sorted({r["temperature"] for r in sub})
    fig, axes = plt.subplots(len(temps), len(drafts), squeeze=False, sharex=True,
                             figsize=(3.2 * len(drafts), 2.8 * len(temps)))
    for i, temp in enumerate(temps):
      for j, draft in enumerate(drafts):
        ax = axes[i][j]
        pts = sorted((r for r in sub if r["draft"] == draft and r["temperature"] == temp),
                     key=lambda r: r["gamma"])
        g = [r["gamma"] for r in pts]
        ax.plot(g, [r["measured_speedup"] for r in pts], "o-", label="measured")
        ax.plot(g, [r["predicted_speedup_v"] for r in pts], "s--", label="predicted (v-aware)")
        ax.plot(g, [r["predicted_speedup_paper"] for r in pts], "^:", label="predicted (paper)")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(g)
        ax.set_title(f"{DRAFT_LABELS.get(draft, draft)}, T={temp:g}", fontsize=9)
        if i == len(temps) - 1:
          ax.set_xlabel("γ")
        if j == 0:
          ax.set_ylabel("speedup")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{task}, batch {batch}")
    fig.tight_layout()
    path = f"{path_prefix}_{task}_b{batch}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(path)
  return paths


def jsonable(obj: Any) -> Any:
  """Dicts with tuple/int keys, numpy scalars and non-finite floats → plain JSON values."""
  if isinstance(obj, Mapping):
    return {(k if isinstance(k, str) else ":".join(map(str, k)) if isinstance(k, tuple)
             else str(k)): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return _finite(float(obj))
  return obj


def machine_metadata(load_before: Iterable[float]) -> dict[str, Any]:
  """`timing.machine_info` (platform, CPU model and count, jax and its device, load average
  before and now) plus the UTC date."""
  import datetime  # pylint: disable=g-import-not-at-top
  return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          **timing.machine_info(load_before)}


def assemble(*, rows: Sequence[Mapping[str, Any]], costs: Mapping[str, Any],
             config: Mapping[str, Any], notes: Sequence[str], metadata: Mapping[str, Any],
             profile: str | None = None, profile_setting: str | None = None,
             ) -> dict[str, Any]:
  """The result written as JSON: metadata, config, notes, costs, rows and best γ per setting
  (and, with `profile` a trace directory, the trace's top events)."""
  return {"metadata": dict(metadata), "config": dict(config), "notes": list(notes),
          "costs": dict(costs), "rows": list(rows), "best": best_gamma_rows(rows),
          "profile": profile, "profile_setting": profile_setting,
          "profile_summary": summarize_trace(profile) if profile else []}


def write_outputs(result: Mapping[str, Any], output_dir: str) -> list[str]:
  """Writes benchmark.json, benchmark.md and speedup_<task>_b<batch>.png; returns the paths."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, "benchmark.json"), os.path.join(output_dir, "benchmark.md")]
  with open(paths[0], "w") as f:
    json.dump(jsonable(result), f, indent=1, allow_nan=False)
  with open(paths[1], "w") as f:
    f.write(markdown(result))
  return paths + plot(result["rows"], os.path.join(output_dir, "speedup"))


def profile_setting(target: Any, draft: Draft, prompts: np.ndarray, *, gamma: int,
                    temperature: float, max_decode_len: int, out_dir: str, seed: int = 0,
                    eos_id: int | None = 1, runs: int = 3) -> str:
  """Captures a jax profiler trace of `runs` speculative decodes (compiled first) to `out_dir`."""
  rng = jax.random.PRNGKey(seed) if temperature > 0 else None
  run = lambda: speculative_generate(target, draft, prompts, gamma=gamma, rng=rng,
                                     max_decode_len=max_decode_len, temperature=temperature,
                                     eos_id=eos_id)
  jax.block_until_ready(run())
  with jax.profiler.trace(out_dir):
    for _ in range(runs):
      jax.block_until_ready(run())
  return out_dir


def summarize_trace(out_dir: str, *, top: int = 25) -> list[dict[str, Any]]:
  """The `top` events of the newest trace under `out_dir` by total duration (ms), with counts.

  Python frames (names starting with "$") and XLA thunks alike; the profiler's own frames are
  dropped. Open the `.trace.json.gz` in Perfetto for the timeline.
  """
  import collections  # pylint: disable=g-import-not-at-top
  import glob  # pylint: disable=g-import-not-at-top
  import gzip  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(os.path.join(out_dir, "plugins", "profile", "*", "*.trace.json.gz")))
  if not files:
    return []
  with gzip.open(files[-1]) as f:
    events = json.load(f).get("traceEvents", [])
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    name = e.get("name", "")
    if e.get("ph") != "X" or "profiler.py" in name or "contextlib.py" in name:
      continue
    total[name] += e.get("dur", 0) / 1e3
    count[name] += 1
  return [{"name": n, "total_ms": ms, "count": count[n]} for n, ms in total.most_common(top)]
