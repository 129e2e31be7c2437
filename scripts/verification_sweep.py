r"""Tokens per target call, with standard errors, for block verification, adaptive γ and lenience.

    python scripts/verification_sweep.py --output_dir=results/verification/sweep
    python scripts/verification_sweep.py --num_sentences=64 --batch=32 --output_dir=/tmp/s

The timed benchmark (`scripts/benchmark.py --gin_file=configs/benchmarks/verification.gin`)
measures speedups on 32 sentences; the differences between the rules' tokens per call
(block verification: +0.05..0.15 in published runs) are within its sampling noise. This sweep
decodes many more test sentences (no timing, large batches) with the shipped pair's distilled
draft and reports, per (temperature, γ, variant): tokens per target call, α̂ (accepted /
(accepted + rejected)), drafted tokens and draft passes per target call, each ratio with its
standard error over sentences (delta method; sentences are the independent units). Writes
sweep.json and sweep.md to --output_dir.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from specdec import benchmarking, data, pretrained, speculative_generate  # noqa: E402

GAMMAS = (1, 2, 3, 4, 6, 8)
ADAPTIVE = ((4, 0.5), (8, 0.5), (4, 0.8), (8, 0.8))  # (γ max, threshold).
LENIENCES = (1.0, 0.5, 0.3, 0.2, 0.1)
LENIENCE_GAMMA = 3

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "results/verification/sweep", "Where to write.")
_NUM = flags.DEFINE_integer("num_sentences", 512, "Test sentences decoded per setting.")
_BATCH = flags.DEFINE_integer("batch", 64, "Rows per decode call.")
_MAX_LEN = flags.DEFINE_integer("max_decode_len", 64, "Tokens per sentence at most.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (the same for every setting).")


def settings() -> list[tuple[float, int, benchmarking.Variant]]:
  """(temperature, γ, variant) in table order."""
  v = benchmarking.Variant
  out = [(0.0, g, v()) for g in GAMMAS] + [(0.0, g, v(threshold=t)) for g, t in ADAPTIVE]
  for rule in ("token", "block"):
    out += [(1.0, g, v(rule)) for g in GAMMAS]
    out += [(1.0, g, v(rule, threshold=t)) for g, t in ADAPTIVE]
  out += [(1.0, LENIENCE_GAMMA, v(lenience=l)) for l in LENIENCES if l != 1.0]
  return out


def ratio_and_se(numerator: np.ndarray, denominator: np.ndarray) -> tuple[float, float]:
  """Σ numerator / Σ denominator over units, and its delta-method standard error."""
  total = denominator.sum()
  r = numerator.sum() / total
  n = len(numerator)
  se = np.sqrt(n / (n - 1) * np.sum((numerator - r * denominator) ** 2)) / total
  return float(r), float(se)


def measure(target, draft, prompts, *, temperature, gamma, variant, batch, max_decode_len,
            seed) -> dict:
  rng = jax.random.PRNGKey(seed) if temperature > 0 else None
  stats, passes, iterations, start = [], 0, 0, time.perf_counter()
  for i in range(0, len(prompts) - batch + 1, batch):
    result = speculative_generate(target, draft, prompts[i:i + batch], gamma=gamma,
                                  max_decode_len=max_decode_len, temperature=temperature,
                                  rng=None if rng is None else jax.random.fold_in(rng, i),
                                  **variant.options())
    s = {k: np.asarray(getattr(result.stats, k)) for k in
         ("target_calls", "draft_calls", "drafted", "accepted", "rejected")}
    stats.append(s)
    passes += int(s["draft_calls"].max())  # The loop's passes (the longest row saw them all).
    iterations += int(s["target_calls"].max())
  cat = {k: np.concatenate([s[k] for s in stats]) for k in stats[0]}
  calls = cat["target_calls"].astype(np.float64)
  tokens, tokens_se = ratio_and_se(cat["accepted"] + calls, calls)
  alpha, alpha_se = ratio_and_se(cat["accepted"].astype(np.float64),
                                 (cat["accepted"] + cat["rejected"]).astype(np.float64))
  drafted, drafted_se = ratio_and_se(cat["drafted"].astype(np.float64), calls)
  return dict(temperature=temperature, gamma=gamma, variant=variant.label,
              verification=variant.verification, threshold=variant.threshold,
              lenience=variant.lenience, sentences=len(calls), target_calls=int(calls.sum()),
              tokens_per_call=tokens, tokens_per_call_se=tokens_se, alpha=alpha,
              alpha_se=alpha_se, drafted_per_call=drafted, drafted_per_call_se=drafted_se,
              draft_passes_per_iteration=passes / iterations,
              seconds=time.perf_counter() - start)


def markdown(result: dict) -> str:
  meta, rows = result["metadata"], result["rows"]
  f = lambda r, k: f"{r[k]:.3f} ± {r[k + '_se']:.3f}"
  lines = [f"# Tokens per call: token vs block verification, adaptive γ, lenience "
           f"({meta['date']})", "",
           f"- command: `{meta['command']}`",
           f"- machine: {meta['platform']}, {meta['cpu_count']} CPUs, jax {meta['jax']} on "
           f"{meta['device']}, load average (1 min) {meta['loadavg_before'][0]:.2f} before / "
           f"{meta['loadavg_after'][0]:.2f} after",
           f"- {result['config']}",
           "- ± is one standard error over sentences. α̂ = accepted / (accepted + rejected "
           "iterations); for block verification it is not the paper's per-token α. At T = 0 "
           "every rule is the greedy one (block = token).", "",
           "## Token vs block verification (T = 1, fixed γ)", "",
           "| γ | tokens/call token | tokens/call block | block − token |", "|---|---|---|---|"]
  by = {(r["temperature"], r["gamma"], r["variant"]): r for r in rows}
  for g in GAMMAS:
    t, b = by[(1.0, g, "token")], by[(1.0, g, "block")]
    diff = b["tokens_per_call"] - t["tokens_per_call"]
    se = np.hypot(b["tokens_per_call_se"], t["tokens_per_call_se"])
    lines.append(f"| {g} | {f(t, 'tokens_per_call')} | {f(b, 'tokens_per_call')} | "
                 f"{diff:+.3f} ± {se:.3f} |")
  lines += ["", "## Every setting", "",
            "| T | γ | variant | tokens/call | α̂ | drafted/call | draft passes/iteration "
            "(batch-shared) | target calls |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['temperature']:g} | {r['gamma']} | {r['variant']} | "
                 f"{f(r, 'tokens_per_call')} | {f(r, 'alpha')} | {f(r, 'drafted_per_call')} | "
                 f"{r['draft_passes_per_iteration']:.2f} | {r['target_calls']} |")
  lines += ["", f"## α against lenience (T = 1, γ = {LENIENCE_GAMMA}; NOT exact below 1)", "",
            "| lenience | α̂ (here) | tokens/call | paper's Table 5 α (EnDe, T5-XXL / T5-small, "
            "T = 1; as quoted in issue 16) |", "|---|---|---|---|"]
  for l in LENIENCES:
    r = by[(1.0, LENIENCE_GAMMA, benchmarking.Variant(lenience=l).label)]
    paper = benchmarking.PAPER_TABLE5_ALPHA.get(l)
    lines.append(f"| {l:g} | {f(r, 'alpha')} | {f(r, 'tokens_per_call')} | "
                 f"{'–' if paper is None else paper} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  import json  # pylint: disable=g-import-not-at-top
  started, load_before = time.perf_counter(), os.getloadavg()
  pair = pretrained.load("ende")
  sources = [src for src, _ in data.read_pairs(pair.task, "test")][:_NUM.value]
  if len(sources) < _NUM.value:
    raise ValueError(f"num_sentences: the test split has only {len(sources)} sentences")
  prompts = benchmarking.pad_prompts(pair.encode(sources, max_length=64), 64)
  rows = []
  for temperature, gamma, variant in settings():
    row = measure(pair.target, pair.draft, prompts, temperature=temperature, gamma=gamma,
                  variant=variant, batch=_BATCH.value, max_decode_len=_MAX_LEN.value,
                  seed=_SEED.value)
    rows.append(row)
    print(f"T={temperature:g} γ={gamma} [{variant.label}]: tokens/call "
          f"{row['tokens_per_call']:.3f} ± {row['tokens_per_call_se']:.3f}, α̂ "
          f"{row['alpha']:.3f}, drafted/call {row['drafted_per_call']:.2f} "
          f"({row['seconds']:.0f} s)", flush=True)
  metadata = benchmarking.machine_metadata(load_before)
  metadata.update(command=" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
                  runtime_s=time.perf_counter() - started)
  result = dict(metadata=metadata, rows=rows, config=dict(
      pair="ende", draft="distilled", split="test", num_sentences=_NUM.value,
      batch=_BATCH.value, max_decode_len=_MAX_LEN.value, input_length=64, seed=_SEED.value))
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(_OUTPUT_DIR.value, "sweep.json"), "w") as f:
    json.dump(benchmarking.jsonable(result), f, indent=1, allow_nan=False)
  with open(os.path.join(_OUTPUT_DIR.value, "sweep.md"), "w") as f:
    f.write(markdown(result))
  print(f"wrote {_OUTPUT_DIR.value}/sweep.{{json,md}} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
  app.run(main)
