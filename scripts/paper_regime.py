#!/usr/bin/env python
r"""The paper's regime on an accelerator: T5 1.1 XXL/XL/large targets with small/base drafts,
measured side by side with Table 2 of Leviathan et al. (ICML 2023), at simulated α.

    python scripts/paper_regime.py --output_dir=/tmp/pr            # on whatever JAX device
    python scripts/paper_regime.py --output_dir=/tmp/pr --command_buffer=+WHILE,+CONDITIONAL
    python scripts/paper_regime.py --output_dir=/tmp/pr --tiny --targets=xxl --drafts=small \
        --batch_sizes=1 --gammas=3 --max_decode_len=16     # CPU smoke run (tiny stand-in configs)
    python scripts/paper_regime.py --summarize_only --output_dir=/tmp/pr   # rebuild summary.md
    OUT=/tmp/out bash scripts/gpu_paper_regime.sh                   # the one ten-minute GPU call

Models: T5 1.1 presets (`specdec.T5Config.preset('t5_1_1_xxl')` etc.: the real 32128 vocabulary,
bfloat16 activations), random weights (timing does not depend on them) initialised on the device
by one jitted program straight into bfloat16 (`partitioning.sharded_initializer`; its compile and
run times are measured and reported). `--targets=ende` is the shipped EN→DE pair instead.

Acceptance is simulated (`specdec.simulated`): each draft is a `SimulatedDraft` around the real
random-weight draft, so it costs a real draft step, but proposes the target's own greedy
continuation with wrong tokens at a Bernoulli(1 − α) set of positions, at the paper's α for that
draft (Table 2, T = 0: EnDe .75/.80/.82 for small/base/large drafts, CNNDM .65/.73/.74). Every
output that uses it says "simulated α". The continuation is settled to the loop's own greedy
output (`simulated.settle`), so acceptance follows the mask even where the device's verify pass
rounds differently from `generate`'s; greedy parity with `generate` is reported separately.

Measured, in the jitted loops, for each target (in --targets order):
  * init time (compile + run) and device memory after it;
  * t₁ (one cached target step), v(γ) = one (γ+1)-token pass / t₁ for γ in --gammas and then
    --v_gammas, and c = one step of the (real, wrapped) draft / t₁ (`benchmarking.measure_costs`,
    caches left unfilled: the same cost without a compile of the prefix pass);
  * the walltime of `speculative_generate` against `generate` on the same prompts
    (`benchmarking.time_unit`: interleaved medians, compile excluded, eos_id=None so every decode
    is --max_decode_len tokens), batch × draft × γ, with the paper's α for each task; the cost
    model's prediction (`specdec.analysis`, measured α, c, v) and the paper's number beside it;
  * memory per device: `memory_stats()` of the device, XLA's memory analysis of the speculative
    executable (arguments = target + draft parameters, temporaries = both caches and activations)
    and `partitioning.memory_per_device` from shapes;
  * with --check_parity (default on): each reported configuration rerun, greedy speculative vs
    `generate` compared token for token, mismatches with the target's top-1/top-2 logit gap
    (`scripts/check_greedy_parity.py`'s report).

Order (the most important numbers first; each later unit is skipped, with a line saying so, when
its estimated cost no longer fits --time_budget_s; the first always runs): per target, (1) the first batch size and the
first draft at every γ (XXL, batch 1, small: γ = 7, 5, 3); (2) the other drafts at the first two
γ; (3) the other batch sizes with the first draft at the first γ; (4) the rest of v(γ); (5) the
remaining units. Output, written as it comes, under --output_dir: results.jsonl (one JSON object
per line: meta, init, costs, settle, row, parity, memory, skipped, note), table.md (one Table-2
row per line), and summary.md at the end (or from --summarize_only).

Launch overhead: --command_buffer sets XLA's --xla_gpu_enable_command_buffer (CUDA graphs) before
JAX starts: '' turns command buffers off, '+WHILE,+CONDITIONAL' adds loops and conditionals to
XLA's default (FUSION, CUBLAS, CUBLASLT, CUSTOM_CALL, CUDNN), so a whole `lax.while_loop` can run
as one graph without a host round trip per iteration. --draft_unroll unrolls the draft's scan
where `speculative_generate` takes a `draft_unroll` keyword (else it is reported as unsupported).
--extra_xla_flags passes anything else (e.g. fusion knobs) to XLA_FLAGS.

Runtime estimates for one H100/H200 (to be replaced by what results.jsonl measures): XXL has
11.1B parameters (22.3 GB in bfloat16; fits one 80 GB H100 and one 141 GB H200); a decode step
reads ~6.4B decoder parameters (~13 GB), so t₁ ≈ 4–5 ms on an H100 (3.35 TB/s) and ≈ 3–4 ms on an
H200 (4.8 TB/s): a 64-token baseline decode takes ~0.3 s and every timing is cheap. Compiles
dominate: XXL init ~15–30 s (compile) + ~1 s (run); each XXL program (the encoder start, one
decoder pass per block size, `generate`, one `speculative_generate` per (draft, γ, batch)) ~10–25 s.
XXL/small at batch 1 for γ = 7, 5, 3 needs ~9 programs: ~2–4 minutes; each further draft at batch
1 ~1 minute, batch 8 another ~2–3 minutes, the rest of v(γ) ~1–2 minutes; XL ~2 minutes, large
~1 minute. The T5 small draft step is launch-bound (~100 kernels, ~0.3–0.6 ms without CUDA graphs:
c ≈ 0.06–0.15 against XXL); the paper's c ≈ 0.02 needs the launch overhead gone.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import inspect
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402  (the backend starts later, after XLA_FLAGS is set)
import numpy as np  # noqa: E402

from specdec import T5Config, T5Model, analysis, benchmarking, generate, partitioning  # noqa: E402
from specdec import simulated, speculative_generate, timing  # noqa: E402

# --- what is measured -----------------------------------------------------------------------------

PRESETS = {"xxl": "t5_1_1_xxl", "xl": "t5_1_1_xl", "large": "t5_1_1_large",
           "base": "t5_1_1_base", "small": "t5_1_1_small"}
SHIPPED = "ende"  # --targets=ende / --drafts=ende: the shipped EN→DE pair.
SHIPPED_DIR = os.path.join(REPO, "specdec", "assets", "checkpoints", "ende")
SHIPPED_ALPHA = 0.6  # The shipped pair's measured greedy α (RESULTS.md: 0.59–0.62).

# Leviathan, Kalman & Matias, "Fast Inference from Transformers via Speculative Decoding", ICML
# 2023 (arXiv:2211.17192), Table 2: T5-XXL (11B) target, batch 1, one TPU-v4, T = 0 rows.
# (task, draft) → (α, γ, walltime improvement).
PAPER_TABLE2 = {
    ("ende", "small"): (0.75, 7, 3.4), ("ende", "base"): (0.80, 7, 2.8),
    ("ende", "large"): (0.82, 7, 1.7),
    ("cnndm", "small"): (0.65, 5, 3.1), ("cnndm", "base"): (0.73, 5, 3.0),
    ("cnndm", "large"): (0.74, 3, 2.2),
}
TASKS = ("ende", "cnndm")

# Tiny stand-ins with the same names (--tiny), for CPU runs and the test.
_TINY = dict(vocab_size=512, num_heads=2, head_dim=8, num_encoder_layers=1, dtype="bfloat16")
TINY_CONFIGS = {
    "xxl": T5Config(emb_dim=32, mlp_dim=64, num_decoder_layers=2, **_TINY),
    "xl": T5Config(emb_dim=24, mlp_dim=48, num_decoder_layers=2, **_TINY),
    "large": T5Config(emb_dim=16, mlp_dim=32, num_decoder_layers=2, **_TINY),
    "base": T5Config(emb_dim=16, mlp_dim=24, num_decoder_layers=1, **_TINY),
    "small": T5Config(emb_dim=8, mlp_dim=16, num_decoder_layers=1, **_TINY),
}

# CommandBufferCmdType names of XLA's xla.proto that --command_buffer accepts.
COMMAND_BUFFER_TYPES = ("FUSION", "CUBLAS", "CUBLASLT", "CUSTOM_CALL", "CUDNN", "COLLECTIVES",
                        "CONDITIONAL", "WHILE", "DYNAMIC_SLICE_FUSION")


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything a run depends on (the flags, or a test's arguments)."""
  output_dir: str
  targets: tuple[str, ...] = ("xxl", "xl", "large")
  drafts: tuple[str, ...] = ("small", "base")
  tasks: tuple[str, ...] = TASKS
  gammas: tuple[int, ...] = (7, 5, 3)
  v_gammas: tuple[int, ...] = tuple(range(1, 9))
  batch_sizes: tuple[int, ...] = (1, 8)
  input_length: int = 64
  max_decode_len: int = 64
  repeats: int = 3
  timing_repeats: int = 20
  param_dtype: str = "bfloat16"
  tiny: bool = False
  alpha: float | None = None
  seed: int = 0
  init_prng: str = "rbg"
  time_budget_s: float = 540.0
  check_parity: bool = True
  draft_unroll: int = 1
  command_buffer: str | None = None
  extra_xla_flags: str = ""
  command: str = ""

  def __post_init__(self):
    names = set(PRESETS) | {SHIPPED}
    for field, values in (("targets", self.targets), ("drafts", self.drafts)):
      if not values or any(v not in names for v in values):
        raise ValueError(f"{field} must name models among {sorted(names)}, got {list(values)}")
    if (SHIPPED in self.targets) != (SHIPPED in self.drafts):
      raise ValueError("targets=ende (the shipped pair) goes with drafts=ende, and only with it")
    if SHIPPED in self.targets and (len(self.targets) > 1 or len(self.drafts) > 1):
      raise ValueError("targets=ende and drafts=ende are the shipped pair; measure it alone")
    if any(t not in TASKS for t in self.tasks) or not self.tasks:
      raise ValueError(f"tasks must be among {TASKS}, got {list(self.tasks)}")
    for field in ("gammas", "v_gammas", "batch_sizes"):
      values = getattr(self, field)
      if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                           for v in values):
        raise ValueError(f"{field} must be ints >= 1, got {list(values)}")
    for field in ("input_length", "max_decode_len", "repeats", "timing_repeats",
                  "draft_unroll"):
      if getattr(self, field) < 1:
        raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
    if self.param_dtype not in ("bfloat16", "float32"):
      raise ValueError(f"param_dtype must be bfloat16 or float32, got {self.param_dtype!r}")
    if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
      raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
    if self.init_prng not in ("rbg", "unsafe_rbg", "threefry2x32"):
      raise ValueError(f"init_prng must be rbg, unsafe_rbg or threefry2x32, got "
                       f"{self.init_prng!r}")
    if self.command_buffer is not None:
      command_buffer_flag(self.command_buffer)


def alphas_for(settings: Settings, draft: str) -> dict[str, float]:
  """task → simulated α for `draft`: the paper's, the shipped pair's, or --alpha."""
  if settings.alpha is not None:
    return {f"alpha={settings.alpha:g}": float(settings.alpha)}
  if draft == SHIPPED:
    return {"specdec_ende": SHIPPED_ALPHA}
  return {task: PAPER_TABLE2[(task, draft)][0] for task in settings.tasks
          if (task, draft) in PAPER_TABLE2}


def paper_number(task: str, draft: str) -> dict[str, Any] | None:
  entry = PAPER_TABLE2.get((task, draft))
  return None if entry is None else {"alpha": entry[0], "gamma": entry[1], "speedup": entry[2]}


# --- XLA flags (set before JAX creates its backend) -------------------------------------------

def command_buffer_flag(value: str) -> str:
  """`--xla_gpu_enable_command_buffer=value` after checking `value` (XLA's syntax: '' for off,
  a list of types that replaces the default, or a list of +TYPE/-TYPE that edits it)."""
  if not isinstance(value, str):
    raise TypeError(f"command_buffer must be a string, got {value!r}")
  items = [v.strip() for v in value.split(",")] if value.strip() else []
  signed = [v[:1] in "+-" and v[:1] != "" for v in items]
  if items and any(signed) and not all(signed):
    raise ValueError(f"command_buffer: every item must have a +/- prefix or none may, got "
                     f"{value!r}")
  for item in items:
    name = item[1:] if item[:1] in "+-" else item
    if name not in COMMAND_BUFFER_TYPES:
      raise ValueError(f"command_buffer: unknown command type {name!r} in {value!r}; known: "
                       f"{', '.join(COMMAND_BUFFER_TYPES)}")
  return f"--xla_gpu_enable_command_buffer={','.join(items)}"


def xla_flags(existing: str, *, command_buffer: str | None, extra: str) -> str:
  """XLA_FLAGS with the run's own flags appended (later flags win in XLA's parser)."""
  parts = [existing.strip()] if existing.strip() else []
  if command_buffer is not None:
    parts.append(command_buffer_flag(command_buffer))
  if extra.strip():
    parts.append(extra.strip())
  return " ".join(parts)


def argv_value(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name=value` or `--name value` in argv (the last one), else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def set_xla_flags(command_buffer: str | None, extra: str) -> str:
  """Puts the run's XLA flags into the environment; refuses once JAX's backend has started."""
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  flags_value = xla_flags(os.environ.get("XLA_FLAGS", ""), command_buffer=command_buffer,
                          extra=extra)
  if flags_value != os.environ.get("XLA_FLAGS", "") and xla_bridge.backends_are_initialized():
    raise RuntimeError("XLA flags must be set before JAX starts its backend")
  if flags_value:
    os.environ["XLA_FLAGS"] = flags_value
  return flags_value


# --- output ---------------------------------------------------------------------------------------

class Writer:
  """results.jsonl and table.md under the output folder, one line at a time, flushed."""

  TABLE_HEADER = (
      "| target | draft | task | batch | γ | α (simulated) | α measured | c | v(γ) | "
      "predicted (v-aware) | predicted (paper, v=1) | measured | paper (T5-XXL, TPU-v4) | "
      "greedy parity |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")

  def __init__(self, output_dir: str, *, started: float, log: Callable[[str], None] = print):
    os.makedirs(output_dir, exist_ok=True)
    self.output_dir, self.started, self.log = output_dir, started, log
    self.jsonl = os.path.join(output_dir, "results.jsonl")
    self.table = os.path.join(output_dir, "table.md")
    if not os.path.exists(self.table):
      with open(self.table, "w") as f:
        f.write("Speculative vs plain greedy decoding, simulated α (see summary.md)\n\n")
        f.write(self.TABLE_HEADER)

  def event(self, kind: str, **fields: Any) -> dict[str, Any]:
    record = {"kind": kind, "elapsed_s": round(time.perf_counter() - self.started, 2), **fields}
    with open(self.jsonl, "a") as f:
      f.write(json.dumps(benchmarking.jsonable(record), allow_nan=False) + "\n")
    return record

  def row(self, row: dict[str, Any]) -> None:
    self.event("row", **row)
    with open(self.table, "a") as f:
      f.write(table_line(row) + "\n")
    self.log(f"  {row['target']}/{row['draft']} {row['task']} b={row['batch']} γ={row['gamma']}: "
             f"simulated α {row['alpha_simulated']:.2f} (measured {row['alpha']:.3f}), c "
             f"{row['c']:.3f}, v {row['v']:.2f}, measured {row['measured_speedup']:.2f}x, "
             f"predicted {row['predicted_speedup_v']:.2f}x, parity "
             f"{row['identical_to_baseline']}")


def _bytes(b: Any) -> str:
  if b is None:
    return "–"
  return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _f(x: Any, digits: int = 2, suffix: str = "") -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "–"
  return f"{x:.{digits}f}{suffix}" if isinstance(x, float) else f"{x}{suffix}"


def table_line(row: dict[str, Any]) -> str:
  paper = row.get("paper")
  paper_text = (f"{paper['speedup']:.1f}× (γ={paper['gamma']}, α={paper['alpha']:.2f})"
                if paper else "–")
  return (f"| {row['target']} | {row['draft']} | {row['task']} | {row['batch']} | "
          f"{row['gamma']} | {row['alpha_simulated']:.2f} (simulated α) | {_f(row['alpha'], 3)} | "
          f"{_f(row['c'], 3)} | {_f(row['v'])} | {_f(row['predicted_speedup_v'], 2, '×')} | "
          f"{_f(row['predicted_speedup_paper'], 2, '×')} | "
          f"**{_f(row['measured_speedup'], 2, '×')}** | {paper_text} | "
          f"{'yes' if row['identical_to_baseline'] else 'NO'} |")


def read_events(output_dir: str) -> list[dict[str, Any]]:
  path = os.path.join(output_dir, "results.jsonl")
  if not os.path.isfile(path):
    raise ValueError(f"No results file: {path}")
  events = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          events.append(json.loads(line))
        except json.JSONDecodeError as e:  # A run killed mid-line leaves a torn last line.
          events.append({"kind": "note", "text": f"{path}:{number}: unreadable line ({e})"})
  return events


def summarize(output_dir: str) -> str:
  """summary.md from results.jsonl (also after a run that was killed): writes it, returns it."""
  events = read_events(output_dir)
  by_kind: dict[str, list[dict[str, Any]]] = {}
  for e in events:
    by_kind.setdefault(e["kind"], []).append(e)
  lines = ["# The paper's regime: speculative decoding at T5 1.1 sizes (simulated α)", ""]
  for meta in by_kind.get("meta", [])[:1]:
    lines += [f"- date: {meta['date']}; device: {meta['device']} ×{meta['device_count']}; "
              f"jax {meta['jax']}, jaxlib {meta['jaxlib']}, flax {meta.get('flax')}",
              f"- commit: {meta.get('git_commit')}{' (dirty tree)' if meta.get('git_dirty') else ''}",
              f"- command: `{meta['command']}`",
              f"- XLA_FLAGS: `{meta['xla_flags'] or '(none)'}`; draft_unroll: "
              f"{meta['draft_unroll']} ({'passed' if meta['draft_unroll_supported'] else 'not supported by speculative_generate'})",
              f"- settings: {meta['settings']}", ""]
  lines += ["Acceptance is **simulated** (`specdec.simulated`): each draft is a real random-weight "
            "T5 draft whose every step is paid, proposing the target's greedy continuation with "
            "wrong tokens at a Bernoulli(1 − α) set of positions; α measured is the loop's own "
            "count. Predicted: (1 − α^(γ+1)) / ((1 − α)(γc + v)) with the measured α, c and "
            "v(γ) (v-aware) or v = 1 (the paper's form). Paper: Table 2 of Leviathan et al. "
            "(2023), T5-XXL target on a TPU-v4, batch 1, T = 0, at the paper's γ.", "",
            "## Table 2, simulated α", "", Writer.TABLE_HEADER.rstrip("\n")]
  lines += [table_line(r) for r in by_kind.get("row", [])]
  lines += ["", "## Models", "", "| model | role | params | param bytes | init compile s | "
            "init run s | device bytes in use after |", "|---|---|---|---|---|---|---|"]
  for e in by_kind.get("init", []):
    mem = (e.get("memory_stats") or {}).get("bytes_in_use")
    lines.append(f"| {e['model']} | {e['role']} | {e['params'] / 1e6:,.1f} M | "
                 f"{_bytes(e['param_bytes'])} | {_f(e.get('compile_s'), 1)} | "
                 f"{_f(e.get('run_s'), 1)} | {_bytes(mem)} |")
  lines += ["", "## Costs (t₁, v(γ), c)", "", "| target | batch | t₁ ms | v(γ) | c | s |",
            "|---|---|---|---|---|---|"]
  for e in by_kind.get("costs", []):
    v = ", ".join(f"{g}: {x:.3f}" for g, x in sorted(e["v"].items(), key=lambda kv: int(kv[0])))
    c = ", ".join(f"{d}: {x:.4f}" for d, x in e["c"].items())
    lines.append(f"| {e['target']} | {e['batch']} | {e['target_step_s'] * 1e3:.3f} | {v} | "
                 f"{c or '–'} | {e['seconds']:.0f} |")
  lines += ["", "## Memory per device", "", "| target | draft | batch | γ | XLA: arguments | "
            "XLA: temporaries | device bytes in use / peak | from shapes: target params + caches "
            "| from shapes: draft params + caches |", "|---|---|---|---|---|---|---|---|---|"]
  for e in by_kind.get("memory", []):
    xla, stats = e.get("xla") or {}, e.get("memory_stats") or {}
    shapes = e["from_shapes"]
    caches = lambda m: m["self_cache"] + m["cross_cache"]
    lines.append(
        f"| {e['target']} | {e['draft']} | {e['batch']} | {e['gamma']} | "
        f"{_bytes(xla.get('argument_size_in_bytes'))} | {_bytes(xla.get('temp_size_in_bytes'))}"
        f" | {_bytes(stats.get('bytes_in_use'))} / {_bytes(stats.get('peak_bytes_in_use'))} | "
        f"{_bytes(shapes['target']['params'])} + {_bytes(caches(shapes['target']))} | "
        f"{_bytes(shapes['draft']['params'])} + {_bytes(caches(shapes['draft']))} |")
  parity = by_kind.get("parity", [])
  lines += ["", "## Greedy parity (reruns)", ""]
  if parity:
    same = sum(p["identical"] for p in parity)
    lines.append(f"{same} of {len(parity)} reruns identical to `generate` token for token.")
    for p in parity:
      if not p["identical"]:
        lines.append(f"- {p['target']}/{p['draft']} {p['task']} b={p['batch']} γ={p['gamma']}: "
                     f"{len(p['mismatches'])} rows differ; first: {p['mismatches'][:3]}")
  else:
    lines.append("No parity reruns recorded.")
  settles = [s for s in by_kind.get("settle", []) if s["passes"] > 1 or not s["converged"]]
  if settles:
    lines += ["", f"Continuations re-settled to the loop's own output (its verify pass rounded "
              f"differently from `generate`'s steps) in {len(settles)} settings: "
              + "; ".join(f"{s['target']}/{s['draft']} {s['task']} b={s['batch']} "
                          f"γ={s['gamma']}: {s['passes']} passes" for s in settles)]
  skipped = by_kind.get("skipped", [])
  if skipped:
    lines += ["", "## Skipped", ""]
    lines += [f"- {s['unit']}: {s.get('reason', 'time budget')} (estimated "
              f"{s['estimate_s']:.0f} s, {s['left_s']:.0f} s left)" for s in skipped]
  notes = by_kind.get("note", []) + by_kind.get("error", [])
  if notes:
    lines += ["", "## Notes", ""] + [f"- {n.get('text', n)}" for n in notes]
  ends = by_kind.get("end", [])
  lines += ["", f"Run {'finished' if ends else 'did not finish (killed or still running)'}"
            + (f" after {ends[-1]['elapsed_s']:.0f} s." if ends else ".")]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(output_dir, "summary.md"), "w") as f:
    f.write(text)
  return text


# --- the schedule -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Unit:
  """One step of the run: time one (target, draft, batch, γ), or measure more v(γ)."""
  kind: str  # "time" or "v"
  target: str
  batch: int
  draft: str | None = None
  gamma: int | None = None
  gammas: tuple[int, ...] = ()

  def __str__(self):
    if self.kind == "v":
      return f"{self.target} b={self.batch} v(γ) for γ={list(self.gammas)}"
    return f"{self.target}/{self.draft} b={self.batch} γ={self.gamma}"


def schedule(settings: Settings) -> list[Unit]:
  """The units in the order they run (see the module docstring's "Order")."""
  out = []
  batches, drafts, gammas = settings.batch_sizes, settings.drafts, settings.gammas
  for target in settings.targets:
    units = [Unit("time", target, b, d, g) for b in batches for d in drafts for g in gammas]
    tiers = [[u for u in units if u.batch == batches[0] and u.draft == drafts[0]],
             [u for u in units if u.batch == batches[0] and u.draft != drafts[0]
              and u.gamma in gammas[:2]],
             [u for u in units if u.batch != batches[0] and u.draft == drafts[0]
              and u.gamma == gammas[0]]]
    extra_v = tuple(g for g in settings.v_gammas if g not in gammas)
    if extra_v:
      tiers.append([Unit("v", target, batches[0], gammas=extra_v)])
    done = {u for tier in tiers for u in tier}
    tiers.append([u for u in units if u not in done])
    out += [u for tier in tiers for u in tier]
  return out


# --- the run --------------------------------------------------------------------------------------

def git_state() -> tuple[str | None, bool | None]:
  """(HEAD, whether tracked files differ from it); SPECDEC_COMMIT where the tree has no .git
  (a copy of the work tree on a lent machine)."""
  try:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, timeout=10, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=REPO, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip())
    return commit, dirty
  except (OSError, subprocess.SubprocessError):
    return os.environ.get("SPECDEC_COMMIT"), None


def supports_draft_unroll() -> bool:
  return "draft_unroll" in inspect.signature(speculative_generate).parameters


def memory_stats() -> dict[str, int] | None:
  stats = jax.devices()[0].memory_stats()
  keep = ("bytes_in_use", "peak_bytes_in_use", "bytes_limit", "largest_alloc_size")
  return {k: int(stats[k]) for k in keep if k in stats} if stats else None


class Runner:
  """Runs the schedule, keeping models, costs and continuations between units."""

  def __init__(self, settings: Settings, writer: Writer):
    self.s, self.w = settings, writer
    self.started = writer.started
    self.models: dict[tuple[str, str], T5Model] = {}
    self.costs: dict[tuple[str, int], dict[str, Any]] = {}
    self.baselines: dict[tuple[str, int], tuple[Any, np.ndarray]] = {}
    self.compile_s: dict[str, float] = {}  # Target → seconds per compiled program (latest).
    self.failed: dict[tuple[str, str], str] = {}  # Models whose init failed, and why.
    self.memory_done: set[tuple] = set()
    self.spec_kwargs: dict[str, Any] = {}
    if settings.draft_unroll != 1:
      if supports_draft_unroll():
        self.spec_kwargs["draft_unroll"] = settings.draft_unroll
      else:
        writer.event("note", text=f"draft_unroll={settings.draft_unroll} requested, but "
                     "speculative_generate has no draft_unroll keyword: not unrolled")

  def left_s(self) -> float:
    return self.s.time_budget_s - (time.perf_counter() - self.started)

  # Models.

  def config(self, name: str) -> T5Config:
    if self.s.tiny:
      return TINY_CONFIGS[name]
    return T5Config.preset(PRESETS[name])

  def model(self, name: str, role: str) -> T5Model:
    key = (role, name)
    if key in self.models:
      return self.models[key]
    if key in self.failed:
      raise RuntimeError(f"{role} {name} failed to initialise earlier: {self.failed[key]}")
    if role == "target":  # One target at a time: free the previous one first.
      for old in [k for k in self.models if k[0] == "target"]:
        del self.models[old]
      self.costs.clear()
      self.baselines.clear()
      gc.collect()
    try:
      model, compile_s, run_s = self.init_model(name, role)
    except Exception as e:
      self.failed[key] = f"{type(e).__name__}: {e}"
      raise
    self.models[key] = model
    param_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(model.params))
    self.w.event("init", model=self.label(name), role=role, params=model.num_params,
                 param_bytes=param_bytes, param_dtype=str(jax.tree_util.tree_leaves(
                     model.params)[0].dtype), compute_dtype=model.config.dtype,
                 compile_s=compile_s, run_s=run_s, memory_stats=memory_stats(),
                 config=dataclasses.asdict(model.config))
    self.w.log(f"[init] {role} {self.label(name)}: {model.num_params / 1e9:.3f} B params, "
               f"{param_bytes / 2**30:.2f} GiB, compile {_f(compile_s, 1)} s, run "
               f"{run_s:.1f} s")
    if name != SHIPPED and role == "target" and compile_s is not None:
      self.compile_s.setdefault(name, max(compile_s / 2, 1.0))
    return model

  def init_model(self, name: str, role: str) -> tuple[T5Model, float | None, float]:
    """(model, compile seconds or None, run seconds): on-device init, or the shipped pair."""
    start = time.perf_counter()
    if name == SHIPPED:
      model = T5Model.load(os.path.join(SHIPPED_DIR, "target" if role == "target" else "draft"))
      jax.block_until_ready(model.params)
      return model, None, time.perf_counter() - start
    config = self.config(name)
    mesh = partitioning.make_mesh(1, 1, devices=jax.devices()[:1])
    init = partitioning.sharded_initializer(config, mesh, param_dtype=self.s.param_dtype)
    key = jax.random.key(self.s.seed + (0 if role == "target" else 1), impl=self.s.init_prng)
    compiled = init.lower(key).compile()
    compile_s = time.perf_counter() - start
    params = jax.block_until_ready(compiled(key))
    return (T5Model(config=config, params=params), compile_s,
            time.perf_counter() - start - compile_s)

  def label(self, name: str) -> str:
    return f"{name} (tiny)" if self.s.tiny and name != SHIPPED else name

  # Estimates for the time budget.

  def per_compile_s(self, target: str) -> float:
    if target in self.compile_s:
      return self.compile_s[target]
    if target == SHIPPED or self.s.tiny:
      return 3.0
    return 3.0 + 1.5 * self.config(target).num_params / 1e9

  def estimate_s(self, unit: Unit) -> float:
    per = self.per_compile_s(unit.target)
    t1 = self.costs.get((unit.target, unit.batch), {}).get("target_step_s", 0.01)
    est = 0.0
    if ("target", unit.target) not in self.models:
      est += 2 * per
    if unit.kind == "v":
      return est + per * len(unit.gammas) + 2.0
    if ("draft", unit.draft) not in self.models:
      est += 5.0
    costs = self.costs.get((unit.target, unit.batch))
    if costs is None:
      est += per * (2 + len(self.s.gammas)) + 5.0
    elif unit.gamma not in costs["v"] or unit.draft not in costs["c"]:
      est += per + 5.0
    if (unit.target, unit.batch) not in self.baselines:
      est += per
    est += per  # The speculative loop for this (draft, γ, batch).
    decode = t1 * self.s.max_decode_len * 1.5
    tasks = len(alphas_for(self.s, unit.draft))
    return est + decode * (self.s.repeats + 4) * (1 + tasks) * (2 if self.s.check_parity else 1)

  # Measurements.

  def ensure_costs(self, target_name: str, batch: int, draft_name: str | None,
                   gammas: Iterable[int]) -> dict[str, Any]:
    target = self.model(target_name, "target")
    costs = self.costs.setdefault((target_name, batch), {"v": {}, "c": {}})
    need_v = [g for g in gammas if g not in costs["v"]]
    drafts = ({} if draft_name is None or draft_name in costs["c"]
              else {draft_name: self.model(draft_name, "draft")})
    if not need_v and not drafts:
      return costs
    start = time.perf_counter()
    measured = benchmarking.measure_costs(
        target, drafts, batch=batch, gammas=need_v, position=self.s.max_decode_len // 2,
        encoder_length=self.s.input_length, repeats=self.s.timing_repeats, fill=False,
        room=max(self.s.gammas + self.s.v_gammas) + 1, decode_fixed=False)
    seconds = time.perf_counter() - start
    costs.setdefault("target_step_s", measured["target_step_s"])
    costs["v"].update(measured["v"])
    costs["c"].update(measured["c"])
    if need_v and target_name != SHIPPED:  # ~ one program per new block size (+ the start).
      self.compile_s[target_name] = max(1.0, seconds / (len(need_v) + 1))
    self.w.event("costs", target=self.label(target_name), batch=batch,
                 target_step_s=measured["target_step_s"], v=measured["v"], c=measured["c"],
                 block_s=measured["block_s"], seconds=seconds, fill_cache=False,
                 position=self.s.max_decode_len // 2,
                 cache_length=self.s.max_decode_len // 2 + max(self.s.gammas + self.s.v_gammas)
                 + 1)
    self.w.log(f"[costs] {self.label(target_name)} b={batch}: t1 "
               f"{measured['target_step_s'] * 1e3:.3f} ms, v {measured['v']}, c "
               f"{measured['c']} ({seconds:.0f} s)")
    return costs

  def baseline(self, target_name: str, batch: int) -> tuple[Any, np.ndarray]:
    """The prompts of (target, batch) and `generate`'s greedy output for them."""
    key = (target_name, batch)
    if key not in self.baselines:
      target = self.model(target_name, "target")
      prompts = timing.random_prompts(batch, self.s.input_length, target.vocab_size,
                                      seed=self.s.seed)
      start = time.perf_counter()
      tokens = np.asarray(generate(target, prompts, max_decode_len=self.s.max_decode_len,
                                   eos_id=None).tokens)
      self.w.event("baseline", target=self.label(target_name), batch=batch,
                   first_call_s=time.perf_counter() - start)
      self.baselines[key] = (prompts, tokens)
    return self.baselines[key]

  def time_unit(self, unit: Unit) -> None:
    s = self.s
    target = self.model(unit.target, "target")
    draft = self.model(unit.draft, "draft")
    costs = self.ensure_costs(unit.target, unit.batch, unit.draft, s.gammas)
    prompts, base_tokens = self.baseline(unit.target, unit.batch)
    sims, first_settle_s = {}, None
    for task, alpha in alphas_for(s, unit.draft).items():
      start = time.perf_counter()
      settled = simulated.settle(target, draft, prompts, base_tokens, alpha=alpha, seed=s.seed,
                                 gamma=unit.gamma, max_decode_len=s.max_decode_len,
                                 **self.spec_kwargs)
      sims[task] = (alpha, settled)
      if first_settle_s is None:  # Its first pass compiled this (draft, γ, batch) loop.
        first_settle_s = time.perf_counter() - start
      self.w.event("settle", target=self.label(unit.target), draft=self.label(unit.draft),
                   task=task, batch=unit.batch, gamma=unit.gamma, alpha=alpha,
                   passes=settled.passes, converged=settled.converged,
                   seconds=time.perf_counter() - start,
                   identical_to_generate=bool(np.array_equal(settled.tokens, base_tokens)))
    drafts = {f"{unit.draft}|{task}": settled.draft for task, (_, settled) in sims.items()}
    measured = benchmarking.time_unit(
        target, drafts, prompts, batch=unit.batch, temperature=0.0,
        settings=[(unit.gamma, benchmarking.Variant())], max_decode_len=s.max_decode_len,
        repeats=s.repeats, seed=s.seed, eos_id=None, speculative_kwargs=self.spec_kwargs)
    for task, (alpha, settled) in sims.items():
      key = f"{unit.draft}|{task}"
      costs_view = {"c": {key: costs["c"][unit.draft]}, "v": costs["v"],
                    "target_step_s": costs["target_step_s"]}
      row = benchmarking.make_row(task=task, draft=key, temperature=0.0, gamma=unit.gamma,
                                  batch=unit.batch, costs=costs_view, groups=measured["groups"],
                                  compile_s=measured["compile_s"][
                                      (key, unit.gamma, benchmarking.Variant())])
      expected = simulated.replay(settled.draft.wrong, gamma=unit.gamma,
                                  max_decode_len=s.max_decode_len)
      row.update(target=self.label(unit.target), draft=self.label(unit.draft),
                 alpha_simulated=alpha, simulated_alpha=True, alpha_replay=expected.alpha,
                 counts_match_replay=(row["accepted"] == int(expected.accepted.sum())
                                      and row["rejected"] == int(expected.rejected.sum())),
                 settle_passes=settled.passes, settle_converged=settled.converged,
                 paper=paper_number(task, unit.draft) if unit.target == "xxl" else None,
                 predicted_speedup_v_at_simulated_alpha=analysis.walltime_improvement(
                     alpha, unit.gamma, row["c"], row["v"]),
                 command_buffer=s.command_buffer,
                 draft_unroll=self.spec_kwargs.get("draft_unroll", 1), tiny=s.tiny,
                 left_s=self.left_s())
      self.w.row(row)
    if unit.target != SHIPPED and first_settle_s is not None:
      self.compile_s[unit.target] = max(1.0, first_settle_s)
    if s.check_parity:
      for task, (_, settled) in sims.items():
        self.parity(unit, task, target, settled.draft, prompts)
    if (unit.target, unit.draft, unit.batch) not in self.memory_done:
      self.memory_done.add((unit.target, unit.draft, unit.batch))
      self.memory(unit, target, draft, next(iter(sims.values()))[1].draft, prompts)

  def parity(self, unit: Unit, task: str, target, sim, prompts) -> None:
    """Reruns both decoders and compares (check_greedy_parity's report for mismatches)."""
    import check_greedy_parity  # pylint: disable=g-import-not-at-top  (scripts/)
    s = self.s
    base = np.asarray(generate(target, prompts, max_decode_len=s.max_decode_len,
                               eos_id=None).tokens)
    spec = np.asarray(speculative_generate(target, sim, prompts, gamma=unit.gamma,
                                           max_decode_len=s.max_decode_len, eos_id=None,
                                           **self.spec_kwargs).tokens)
    mismatches = check_greedy_parity.mismatch_report(target, prompts, base, spec)
    self.w.event("parity", target=self.label(unit.target), draft=self.label(unit.draft),
                 task=task, batch=unit.batch, gamma=unit.gamma, rows=int(base.shape[0]),
                 identical=not mismatches, mismatches=mismatches,
                 baseline_deterministic=bool(np.array_equal(
                     base, self.baselines[(unit.target, unit.batch)][1])))

  def memory(self, unit: Unit, target, draft, sim, prompts) -> None:
    """Device memory, XLA's analysis of the speculative executable, and shapes' arithmetic."""
    s = self.s
    cache_length = s.max_decode_len + 2 * (unit.gamma + 1)
    shapes = {role: partitioning.memory_per_device(
        model.config, (1, 1), unit.batch, cache_length, dtype=s.param_dtype if unit.target !=
        SHIPPED else "float32", encoder_length=s.input_length)
              for role, model in (("target", target), ("draft", draft))}
    xla = None
    try:
      from specdec import sampling, speculative, validation  # pylint: disable=g-import-not-at-top
      compiled = speculative._speculative_generate.lower(  # pylint: disable=protected-access
          target, sim, prompts, validation.check_rng(None, needed=False), gamma=unit.gamma,
          max_decode_len=s.max_decode_len, sampling=sampling.Sampling(), eos_id=None,
          **self.spec_kwargs).compile()
      analysis_ = compiled.memory_analysis()
      xla = {k: int(getattr(analysis_, k)) for k in (
          "argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
          "alias_size_in_bytes", "generated_code_size_in_bytes") if hasattr(analysis_, k)}
    except Exception as e:  # pylint: disable=broad-except  (a diagnostic; never stop the run)
      self.w.event("note", text=f"XLA memory analysis unavailable: {type(e).__name__}: {e}")
    self.w.event("memory", target=self.label(unit.target), draft=self.label(unit.draft),
                 batch=unit.batch, gamma=unit.gamma, cache_length=cache_length,
                 memory_stats=memory_stats(), xla=xla, from_shapes=shapes,
                 live_array_bytes=int(sum(x.nbytes for x in jax.live_arrays())))

  def v_unit(self, unit: Unit) -> None:
    self.ensure_costs(unit.target, unit.batch, None, unit.gammas)

  def run(self) -> None:
    timed = set()  # Targets with at least one timed unit done.
    for number, unit in enumerate(schedule(self.s)):
      estimate, left = self.estimate_s(unit), self.left_s()
      # The first unit (the most important number) always runs while any budget is left: its
      # estimate knows no compile time yet, and a caller's hard timeout bounds it anyway. More
      # v(γ) is only worth a target's init if the target got a timed row.
      reason = ("time budget" if left <= 0 or (estimate > left and number > 0) else
                "no timed row for this target" if unit.kind == "v" and unit.target not in timed
                else None)
      if reason:
        self.w.event("skipped", unit=str(unit), reason=reason, estimate_s=estimate, left_s=left)
        self.w.log(f"[skip] {unit}: {reason} (estimated {estimate:.0f} s, {left:.0f} s left)")
        continue
      self.w.log(f"[unit] {unit} (estimated {estimate:.0f} s, {left:.0f} s left)")
      try:
        (self.v_unit if unit.kind == "v" else self.time_unit)(unit)
        timed.add(unit.target)
      except Exception as e:  # pylint: disable=broad-except  (record it, go on to the next unit)
        import traceback  # pylint: disable=g-import-not-at-top
        self.w.event("error", unit=str(unit), text=f"{unit}: {type(e).__name__}: {e}",
                     traceback=traceback.format_exc()[-4000:])
        self.w.log(f"[error] {unit}: {type(e).__name__}: {e}")
        if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
          self.models.clear()
          self.costs.clear()
          self.baselines.clear()
          gc.collect()


def run(settings: Settings) -> str:
  """Runs everything `settings` asks for; returns summary.md's text."""
  started = time.perf_counter()
  writer = Writer(settings.output_dir, started=started)
  device = jax.devices()[0]
  commit, dirty = git_state()
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  writer.event(
      "meta", date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      device=f"{device.platform} ({device.device_kind})", device_count=jax.device_count(),
      jax=jax.__version__, jaxlib=jaxlib.__version__, flax=flax.__version__,
      python=platform.python_version(), host=platform.node(), git_commit=commit, git_dirty=dirty,
      command=settings.command, xla_flags=os.environ.get("XLA_FLAGS", ""),
      draft_unroll=settings.draft_unroll, draft_unroll_supported=supports_draft_unroll(),
      settings=dataclasses.asdict(settings), memory_stats=memory_stats(),
      loadavg=list(os.getloadavg()), schedule=[str(u) for u in schedule(settings)])
  writer.log(f"[meta] {device.platform} ({device.device_kind}), jax {jax.__version__}, "
             f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, budget {settings.time_budget_s} s")
  try:
    Runner(settings, writer).run()
  finally:
    writer.event("end", loadavg=list(os.getloadavg()))
    text = summarize(settings.output_dir)
  return text


# --- flags ------------------------------------------------------------------------------------

def define_flags() -> None:
  """The script's flags (defined only when run as a script, so tests can import `run`)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  d = Settings.__dataclass_fields__  # pylint: disable=no-member
  flags.DEFINE_string("output_dir", None, "Where results.jsonl, table.md, summary.md go.")
  flags.DEFINE_list("targets", list(d["targets"].default), f"Targets, in order: among "
                    f"{sorted(PRESETS)}, or 'ende' (the shipped pair).")
  flags.DEFINE_list("drafts", list(d["drafts"].default), "Drafts, in order ('ende' with "
                    "targets=ende).")
  flags.DEFINE_list("tasks", list(TASKS), "Whose α (Table 2) to simulate: ende, cnndm.")
  flags.DEFINE_list("gammas", [str(g) for g in d["gammas"].default], "γ values timed, "
                    "most important first.")
  flags.DEFINE_list("v_gammas", [str(g) for g in d["v_gammas"].default], "γ values whose "
                    "v(γ) is measured (those in --gammas first).")
  flags.DEFINE_list("batch_sizes", [str(b) for b in d["batch_sizes"].default],
                    "Batch sizes, most important first.")
  flags.DEFINE_integer("input_length", d["input_length"].default, "Encoder tokens per prompt.")
  flags.DEFINE_integer("max_decode_len", d["max_decode_len"].default, "Tokens per decode.")
  flags.DEFINE_integer("repeats", d["repeats"].default, "Timed decodes per setting (median).")
  flags.DEFINE_integer("timing_repeats", d["timing_repeats"].default,
                       "Timed passes per block size for t1, v, c (median).")
  flags.DEFINE_enum("param_dtype", d["param_dtype"].default, ["bfloat16", "float32"],
                    "Storage dtype of the random parameters.")
  flags.DEFINE_bool("tiny", False, "Tiny stand-in configs under the same names (CPU tests).")
  flags.DEFINE_float("alpha", None, "One simulated α for every draft instead of Table 2's.")
  flags.DEFINE_integer("seed", 0, "Seed of the weights, prompts and acceptance masks.")
  flags.DEFINE_enum("init_prng", d["init_prng"].default, ["rbg", "unsafe_rbg", "threefry2x32"],
                    "PRNG of the weight init (rbg compiles and runs fastest on accelerators).")
  flags.DEFINE_float("time_budget_s", d["time_budget_s"].default, "Stop starting units whose "
                     "estimated cost no longer fits; results so far are kept.")
  flags.DEFINE_bool("check_parity", True, "Rerun every reported configuration and compare "
                    "greedy outputs with generate's token for token.")
  flags.DEFINE_integer("draft_unroll", 1, "Unroll of the draft's scan (needs "
                       "speculative_generate(draft_unroll=...)).")
  flags.DEFINE_string("command_buffer", None, "XLA's --xla_gpu_enable_command_buffer, set "
                      "before JAX starts: '' (off), '+WHILE,+CONDITIONAL', or a full list of "
                      f"{', '.join(COMMAND_BUFFER_TYPES)}. Default: XLA's own.")
  flags.DEFINE_string("extra_xla_flags", "", "More XLA_FLAGS (set before JAX starts).")
  flags.DEFINE_bool("summarize_only", False, "Only rebuild summary.md from results.jsonl.")


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  if not f.output_dir:
    raise ValueError("--output_dir is required")
  if f.summarize_only:
    print(summarize(f.output_dir))
    return
  ints = lambda name: tuple(int(x) for x in getattr(f, name))
  settings = Settings(
      output_dir=f.output_dir, targets=tuple(f.targets), drafts=tuple(f.drafts),
      tasks=tuple(f.tasks), gammas=ints("gammas"), v_gammas=ints("v_gammas"),
      batch_sizes=ints("batch_sizes"), input_length=f.input_length,
      max_decode_len=f.max_decode_len, repeats=f.repeats, timing_repeats=f.timing_repeats,
      param_dtype=f.param_dtype, tiny=f.tiny, alpha=f.alpha, seed=f.seed,
      init_prng=f.init_prng, time_budget_s=f.time_budget_s, check_parity=f.check_parity,
      draft_unroll=f.draft_unroll, command_buffer=f.command_buffer,
      extra_xla_flags=f.extra_xla_flags,
      command=" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
  print(run(settings))


if __name__ == "__main__":
  # XLA reads XLA_FLAGS once, when JAX starts its backend: set them before anything runs.
  set_xla_flags(argv_value(sys.argv, "command_buffer"),
                argv_value(sys.argv, "extra_xla_flags") or "")
  define_flags()
  from absl import app  # pylint: disable=g-import-not-at-top
  app.run(main)
