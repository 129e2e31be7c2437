"""The baseline and speculative decoding of the same prompts, side by side, timed fairly.

What `scripts/demo.py` and `scripts/translate.py --compare` report: every prompt is decoded one
at a time (batch 1, as in the paper) by `specdec.generate` (the target alone) and by
`specdec.speculative_generate` (target + draft). Each prompt is decoded once by both untimed (the
first call compiles; the outputs and the verification counts come from it), then `repeats`
times by both in interleaved rounds (`timing.interleaved_medians`); its times are the medians.
The prompts should share one shape (pad them, e.g. `benchmarking.pad_prompts`) so that each
decoder compiles once. `cost_model` adds the paper's prediction from the measured c and v(γ).

Ratios measured here depend on the machine and its load: print `timing.machine_line` beside them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import numpy as np

from specdec import analysis, timing
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


def cost_model(target: Any, draft: Any, *, gamma: int, alpha: float, position: int = 32,
               encoder_length: int = 32, repeats: int = 30) -> dict[str, float]:
  """The measured c (one draft step / one target step, `timing.measure_cost_ratio`), v(γ) (one
  (γ+1)-token target pass / one 1-token pass) and the v-aware predicted speedup
  `analysis.walltime_improvement(alpha, gamma, c, v)`, at batch 1 and decoder `position`."""
  kwargs = dict(batch=1, position=position, repeats=repeats, encoder_length=encoder_length)
  c = timing.measure_cost_ratio(target, draft, **kwargs)
  v = timing.measure_verify_cost(target, gammas=[gamma], **kwargs)[gamma]
  return {"c": c, "v": v,
          "predicted_speedup": analysis.walltime_improvement(alpha, gamma, c, v)}


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
