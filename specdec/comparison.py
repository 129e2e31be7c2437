"""The baseline and speculative decoding of the same prompts, side by side, timed fairly.

What `scripts/demo.py` and `scripts/translate.py --compare` report: every prompt is decoded one
at a time (batch 1, as in the paper) by `specdec.generate` (the target alone) and by
`specdec.speculative_generate` (target + draft). Each prompt is decoded once by both untimed (the
first call compiles; the outputs and the verification counts come from it), then `repeats`
times by both in interleaved rounds (`timing.interleaved_medians`); its times are the medians.
The prompts should share one shape (pad them, e.g. `benchmarking.pad_prompts`) so that each
decoder compiles once. `cost_model` adds the cost model's prediction from passes timed as the
loop runs them (c, c₂, v(γ), the fixed cost of a decode).

Ratios measured here depend on the machine and its load: print `timing.machine_line` beside them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from specdec import analysis, benchmarking, timing
from specdec.decoding import generate
from specdec.speculative import speculative_generate


@dataclasses.dataclass(frozen=True)
class Row:
  """One prompt decoded by both."""
  baseline_tokens: np.ndarray     # [max_decode_len] int32, 0 after EOS.
  speculative_tokens: np.ndarray  # [max_decode_len] int32, 0 after EOS.
  stats: dict[str, float]         # `SpeculativeStats.summary()` of the speculative decode.
  baseline_s: float               # Median seconds of one baseline decode.
  speculative_s: float            # Median seconds of one speculative decode.

  @property
  def identical(self) -> bool:
    return bool(np.array_equal(self.baseline_tokens, self.speculative_tokens))

  @property
  def baseline_steps(self) -> int:
    """Tokens the baseline decoded, EOS included: its number of target steps."""
    return int(np.sum(self.baseline_tokens > 0))


def compare(target: Any, draft: Any, prompts: np.ndarray, *, gamma: int, max_decode_len: int,
            repeats: int = 3, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
            seed: int = 0, eos_id: int | None = 1,
            progress: Callable[[int], None] | None = None) -> list[Row]:
  """Decodes each row of int `[N, S]` `prompts` alone with both decoders (see the module doc).

  At temperature > 0 prompt i draws from `fold_in(PRNGKey(seed), i)` in both decoders; the two
  outputs are then samples of one distribution, not equal. `progress(i)` is called after row i.
  """
  prompts = np.asarray(prompts)
  if prompts.ndim != 2 or prompts.shape[0] == 0:
    raise ValueError(f"prompts must be a non-empty [N, S] batch, got shape {prompts.shape}")
  if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
  options = dict(max_decode_len=max_decode_len, temperature=temperature, top_k=top_k,
                 top_p=top_p, eos_id=eos_id)
  rows = []
  for i in range(prompts.shape[0]):
    row = prompts[i:i + 1]
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), i) if temperature > 0 else None
    fns = {"baseline": lambda r=row, k=rng: generate(target, r, rng=k, **options),
           "speculative": lambda r=row, k=rng: speculative_generate(
               target, draft, r, gamma=gamma, rng=k, **options)}
    base, spec = (jax.block_until_ready(fns[k]()) for k in ("baseline", "speculative"))
    times = timing.interleaved_medians(fns, repeats=repeats, warmup=0)
    rows.append(Row(baseline_tokens=np.asarray(base.tokens)[0],
                    speculative_tokens=np.asarray(spec.tokens)[0],
                    stats=spec.stats.summary(), baseline_s=times["baseline"],
                    speculative_s=times["speculative"]))
    if progress is not None:
      progress(i)
  return rows


def totals(rows: Sequence[Row]) -> dict[str, Any]:
  """Sums over rows: identical outputs, α (MLE), target calls vs baseline steps, times and the
  speedup (overall: total baseline time / total speculative time; and the median per row)."""
  if not rows:
    raise ValueError("rows must not be empty")
  accepted = sum(r.stats["accepted"] for r in rows)
  rejected = sum(r.stats["rejected"] for r in rows)
  baseline_s = sum(r.baseline_s for r in rows)
  speculative_s = sum(r.speculative_s for r in rows)
  return {"rows": len(rows), "identical": sum(r.identical for r in rows),
          "accepted": accepted, "rejected": rejected,
          "alpha": analysis.alpha_from_counts(accepted, rejected),
          "target_calls": sum(r.stats["target_calls"] for r in rows),
          "baseline_steps": sum(r.baseline_steps for r in rows),
          "baseline_s": baseline_s, "speculative_s": speculative_s,
          "speedup": baseline_s / speculative_s,
          "median_speedup": float(np.median([r.baseline_s / r.speculative_s for r in rows]))}


def cost_model(target: Any, draft: Any, total: dict[str, Any], *, gamma: int,
               position: int = 32, encoder_length: int = 32, repeats: int = 20
               ) -> dict[str, float]:
  """The cost model's prediction for the decodes summed in `total` (`totals(rows)`, batch 1).

  Measured as the decoders run (`benchmarking.measure_costs`, in-loop, at decoder `position`):
  t₁, one cached target step; v(γ), one (γ+1)-token pass over t₁; c, one draft step over t₁;
  c₂, the draft's 2-token catch-up pass over t₁; the fixed cost of one decode (the encoder pass
  and set-up). Predicted from α: the paper's v-aware speedup E/(γc + v) (E the expected tokens
  per iteration), and the speedup of the whole decodes, each paying the fixed cost once on both
  sides and an iteration costing (γ − 1)c + c₂ + v (`benchmarking.iteration_cost_in_steps`,
  `benchmarking.decode_speedup`). Also per iteration: the measured ms (the speculative time less
  the decodes' fixed costs, over the target calls) and the modelled ms; their difference is the
  loop's own overhead.
  """
  costs = benchmarking.measure_costs(target, {"draft": draft}, batch=1, gammas=[gamma],
                                     position=position, encoder_length=encoder_length,
                                     repeats=repeats)
  t1, fixed = costs["target_step_s"], costs["fixed_s"]
  c, c2, v = costs["c"]["draft"], costs["c2"]["draft"], costs["v"][gamma]
  expected = analysis.expected_tokens(total["alpha"], gamma)
  per_iteration = benchmarking.iteration_cost_in_steps(draft_passes=gamma, c=c, v=v, c2=c2)
  decodes, calls = total["rows"], total["target_calls"]
  predicted = benchmarking.decode_speedup(expected, per_iteration,
                                          steps=total["baseline_steps"], decodes=decodes,
                                          fixed_in_steps=fixed / t1)
  measured_ms = (total["speculative_s"] - decodes * fixed) * 1e3 / calls
  return {"c": c, "c2": c2, "v": v, "target_step_ms": t1 * 1e3, "fixed_ms": fixed * 1e3,
          "predicted_speedup_v": analysis.walltime_improvement(total["alpha"], gamma, c, v),
          "predicted_speedup": predicted, "measured_over_predicted": total["speedup"] / predicted,
          "ms_per_iteration": measured_ms, "modelled_ms_per_iteration": per_iteration * t1 * 1e3,
          "loop_overhead_ms_per_iteration": measured_ms - per_iteration * t1 * 1e3}


def cost_lines(costs: dict[str, float], *, gamma: int) -> list[str]:
  """What a script prints for `cost_model(...)`."""
  return [
      f"cost model (passes timed inside a jitted loop): c = {costs['c']:.3f} (one draft step / "
      f"one target step of {costs['target_step_ms']:.2f} ms), c2 = {costs['c2']:.3f} (the "
      f"draft's 2-token catch-up pass), v({gamma}) = {costs['v']:.2f} (one {gamma + 1}-token "
      f"target pass / one step), {costs['fixed_ms']:.0f} ms fixed per decode (encoder, set-up)",
      f"predicted at this alpha: {costs['predicted_speedup']:.2f}x for these decodes "
      f"({costs['predicted_speedup_v']:.2f}x per iteration, the paper's v-aware form); "
      f"measured/predicted {costs['measured_over_predicted']:.2f}: an iteration took "
      f"{costs['ms_per_iteration']:.2f} ms vs {costs['modelled_ms_per_iteration']:.2f} ms "
      f"modelled, {costs['loop_overhead_ms_per_iteration']:.2f} ms of the loop's own"]


def report_lines(total: dict[str, Any], *, gamma: int, greedy: bool) -> list[str]:
  """The summary a script prints for `totals(rows)`."""
  saved = 1 - total["target_calls"] / total["baseline_steps"] if total["baseline_steps"] else 0
  same = (f"{total['identical']} of {total['rows']}" if greedy else
          "not compared (T > 0: both are samples of the target's distribution)")
  return [
      f"greedy outputs identical to the baseline: {same}",
      f"alpha (acceptance rate, MLE):            {total['alpha']:.3f}",
      f"target calls: {total['target_calls']} speculative vs {total['baseline_steps']} baseline "
      f"steps ({saved:.0%} saved)",
      f"walltime: baseline {total['baseline_s'] * 1e3:.0f} ms, speculative "
      f"{total['speculative_s'] * 1e3:.0f} ms; speedup {total['speedup']:.2f}x overall, median "
      f"per sentence {total['median_speedup']:.2f}x (gamma={gamma}, batch 1, medians of "
      f"interleaved runs, compile excluded)"]
