"""Wall-clock measurements for the cost model: v(γ), c, and ms/token of whole decodes.

The paper's Theorem 3.8 takes a target pass over γ + 1 tokens to cost as much as one token
(v = 1). On a CPU it does not, so `scripts/verify_cost.py` measures

  v(γ) = time of one (γ+1)-token target pass / time of one 1-token pass,

both through the same cached `extend` the decoders use, on a cache filled to a realistic
position; and the cost coefficient

  c = time of one draft step / time of one target step (both single-token passes).

Timings are medians over many runs after a warm-up (compile) run; every function blocks on its
results. `measure_block_times` and `measure_cost_ratio` time single calls (each pays a dispatch);
`measure_loop_times` times passes inside one jitted loop, as the decoders run them, which is what
the cost model's c and v mean there. Nothing here is used by the tests (no timed tests).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from specdec import sampling
from specdec.drafts import reads_target_encoder

Array = jax.Array


def median_seconds(fn: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
  """Median wall time in seconds of `fn()` (blocking on its outputs) over `repeats` runs."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def random_prompts(batch: int, length: int, vocab_size: int, *, seed: int = 0) -> Array:
  """int32 `[batch, length]` random token ids in [2, vocab_size) (no padding, no EOS)."""
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(2, vocab_size, (batch, length)), jnp.int32)


@jax.jit
def _rewind_and_extend(model, cache, position, tokens):
  """One pass of `tokens` `[B, k]` at `position` `[B]`: what the speculative loop does."""
  logits, cache = model.extend(model.rewind(cache, position), tokens)
  return logits, cache


def _filled_cache(model, *, batch: int, position: int, room: int, encoder_length: int,
                  seed: int, target=None, fill: bool = True):
  """A cache with `position` real entries per row (one teacher-forced pass) and `room` more.
  A draft that reads the target's encoder output (`drafts.TargetEncoderDraft`) needs `target`.

  With `fill=False` the first `position` entries stay zero: the timed passes rewind to
  `position` either way and cost the same (every pass attends over the whole cache, masked), and
  the teacher-forced pass, a compile of its own, is skipped (minutes for an 11B model).
  """
  prompts = random_prompts(batch, encoder_length, model.vocab_size, seed=seed)
  if reads_target_encoder(model):
    if target is None:
      raise TypeError(f"{type(model).__name__} reads the target's encoder output: pass target")
    cache = model.start_from_encoded(prompts, target.encode(prompts),
                                     cache_length=position + room)
  else:
    cache = model.start(prompts, cache_length=position + room)
  if position and fill:
    prefix = random_prompts(batch, position, model.vocab_size, seed=seed + 1)
    _, cache = model.extend(cache, prefix)
  return cache


def interleaved_medians(fns: dict[Any, Callable[[], Any]], *, repeats: int,
                        warmup: int = 1) -> dict[Any, float]:
  """Median seconds of each `fn()` over `repeats` rounds; each round runs every fn once, so
  slow drifts in machine load affect all of them alike (ratios stay meaningful)."""
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  for fn in fns.values():
    for _ in range(warmup):
      jax.block_until_ready(fn())
  times = {key: [] for key in fns}
  for _ in range(repeats):
    for key, fn in fns.items():
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times[key].append(time.perf_counter() - start)
  return {key: statistics.median(t) for key, t in times.items()}


def _block_fns(model, *, batch: int, sizes: list[int], position: int, encoder_length: int,
               seed: int, fill: bool = True, room: int | None = None, target=None
               ) -> dict[int, Callable[[], Any]]:
  cache = _filled_cache(model, batch=batch, position=position, room=room or max(sizes),
                        encoder_length=encoder_length, seed=seed, fill=fill, target=target)
  where = jnp.full((batch,), position, jnp.int32)
  fns = {}
  for k in sizes:
    tokens = random_prompts(batch, k, model.vocab_size, seed=seed + 2 + k)
    fns[k] = (lambda t: lambda: _rewind_and_extend(model, cache, where, t)[0])(tokens)
  return fns


def measure_block_times(model, *, batch: int, sizes: Iterable[int], position: int = 64,
                        repeats: int = 50, encoder_length: int = 32, seed: int = 0,
                        fill: bool = True, room: int | None = None) -> dict[int, float]:
  """Median seconds of one cached pass over k tokens at `position`, for each k in `sizes`.

  Each timed call rewinds the cache to `position` and feeds k tokens through one jitted
  function (compiled once per k and cache length before timing); the sizes are timed in
  interleaved rounds. The cache holds `position` + `room` entries (default: the largest size;
  a fixed `room` lets later calls reuse the compiled passes). `fill=False` leaves the cache's
  first `position` entries zero (same cost, one compile fewer).
  """
  sizes = sorted(set(int(k) for k in sizes))
  if not sizes or sizes[0] < 1:
    raise ValueError(f"sizes must be positive block lengths, got {sizes}")
  if room is not None and room < sizes[-1]:
    raise ValueError(f"room must be >= the largest size {sizes[-1]}, got {room}")
  fns = _block_fns(model, batch=batch, sizes=sizes, position=position,
                   encoder_length=encoder_length, seed=seed, fill=fill, room=room)
  return interleaved_medians(fns, repeats=repeats)


def measure_verify_cost(model, *, batch: int, gammas: Iterable[int], position: int = 64,
                        repeats: int = 50, encoder_length: int = 32,
                        seed: int = 0) -> dict[int, float]:
  """v(γ) = time of one (γ+1)-token pass / time of one 1-token pass, for each γ in `gammas`.

  Args:
    model: A `T5Model` (or any `Draft`-protocol model).
    batch: Rows per pass.
    gammas: Draft lengths γ ≥ 1.
    position: Decoder tokens already in the cache (a realistic mid-decode position).
    repeats: Timed runs per block length (the median is used).

  Returns:
    {γ: v(γ)} as floats.
  """
  gammas = [int(g) for g in gammas]
  if not gammas or min(gammas) < 1:
    raise ValueError(f"gammas must be >= 1, got {gammas}")
  times = measure_block_times(model, batch=batch, sizes=[1] + [g + 1 for g in gammas],
                              position=position, repeats=repeats,
                              encoder_length=encoder_length, seed=seed)
  return {g: times[g + 1] / times[1] for g in gammas}


def measure_cost_ratio(target, draft, *, batch: int = 1, position: int = 64, repeats: int = 50,
                       encoder_length: int = 32, seed: int = 0, fill: bool = True,
                       room: int = 1) -> float:
  """c = time of one single-token draft step / time of one single-token target step
  (interleaved rounds, medians). The caches hold `position` + `room` entries: pass the `room`
  of a `measure_block_times` call (its largest size) to reuse its compiled target step."""
  if room < 1:
    raise ValueError(f"room must be >= 1, got {room}")
  kwargs = dict(batch=batch, sizes=[1], position=position, encoder_length=encoder_length,
                seed=seed, fill=fill, room=room)
  fns = {"target": _block_fns(target, **kwargs)[1],
         "draft": _block_fns(draft, target=target, **kwargs)[1]}
  times = interleaved_medians(fns, repeats=repeats)
  return times["draft"] / times["target"]


@functools.partial(jax.jit, static_argnames=("steps",))
def _passes_in_a_loop(model, cache, position, tokens, *, steps: int):
  """`steps` passes of a `[B, k]` block at `position`, inside one `lax.fori_loop`: each pass
  rewinds to `position` and feeds the block, whose first token is the previous pass's argmax
  (a data dependency, so the passes run in order and none can be skipped)."""
  def body(_, carry):
    cache, tokens = carry
    logits, cache = model.extend(model.rewind(cache, position), tokens)
    first = sampling.argmax(logits[:, -1])
    return cache, tokens.at[:, 0].set(first)
  return jax.lax.fori_loop(0, steps, body, (cache, tokens))[1]


def measure_loop_times(models: dict[Any, Any], *, target, batch: int,
                       sizes: Iterable[int] | dict[Any, Iterable[int]],
                       steps: int = 16, position: int = 64, repeats: int = 10,
                       encoder_length: int = 32, seed: int = 0,
                       fill: bool = True) -> dict[tuple[Any, int], float]:
  """Seconds of one cached pass over k tokens *inside a jitted loop* (as in the decoders, with
  no per-call dispatch), for each model and each k in `sizes`: {(name, k): seconds}.

  Each (model, k) runs `steps` passes in one `lax.fori_loop`; the time of one call over `steps`
  is its per-pass time (medians over `repeats` interleaved rounds: all models and sizes alike,
  so their ratios are robust to drifts in load). `sizes` may differ per model ({name: sizes}).
  `target` starts drafts that read its encoder output.
  """
  per_model = {name: sorted(set(int(k) for k in (sizes[name] if isinstance(sizes, dict)
                                                  else sizes)))
               for name in models}
  for name, ks in per_model.items():
    if not ks or ks[0] < 1:
      raise ValueError(f"sizes must be positive block lengths, got {ks} for {name!r}")
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  fns = {}
  for name, model in models.items():
    for k, fn in loop_pass_fns(model, target=target, batch=batch, sizes=per_model[name],
                               steps=steps, position=position, encoder_length=encoder_length,
                               seed=seed, fill=fill).items():
      fns[(name, k)] = fn
  return {key: t / steps for key, t in interleaved_medians(fns, repeats=repeats).items()}


def loop_pass_fns(model, *, batch: int, sizes: Iterable[int], steps: int = 16,
                  position: int = 64, encoder_length: int = 32, seed: int = 0,
                  fill: bool = True, target=None) -> dict[int, Callable[[], Any]]:
  """{k: fn}: each `fn()` runs `steps` cached passes of a `[batch, k]` block at `position`
  inside one jitted `lax.fori_loop` (what `measure_loop_times` times), for callers that time
  them interleaved with other work (one pass = the call's time / `steps`)."""
  sizes = sorted(set(int(k) for k in sizes))
  where = jnp.full((batch,), position, jnp.int32)
  cache = _filled_cache(model, batch=batch, position=position, room=max(sizes),
                        encoder_length=encoder_length, seed=seed, target=target, fill=fill)
  fns = {}
  for k in sizes:
    tokens = random_prompts(batch, k, model.vocab_size, seed=seed + 2 + k)
    fns[k] = functools.partial(_passes_in_a_loop, model, cache, where, tokens, steps=steps)
  return fns


def time_decode(fn: Callable[[], Any], *, repeats: int = 5) -> float:
  """Median seconds of a whole decode `fn()` (compiled by a warm-up run first)."""
  return median_seconds(fn, repeats=repeats, warmup=1)


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo on Linux; `platform.processor()` elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith(("model name", "hardware")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine() or "unknown CPU"


def machine_info(load_before: Iterable[float]) -> dict[str, Any]:
  """Where a measurement ran: platform, CPU model and count, jax version and device, the load
  average (1, 5, 15 min) before (`load_before`, from `os.getloadavg()`) and now, and XLA_FLAGS
  (which kernels ran: see `specdec.xla_cpu`)."""
  device = jax.devices()[0]
  return {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "device": f"{device.platform} ({device.device_kind})",
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())}


def machine_line(info: dict[str, Any]) -> str:
  """One line for a script to print beside its ratios, from `machine_info`'s dict, e.g.
  "machine: AMD EPYC, 2 cores, jax 0.10.2 on cpu (cpu); load average 1.33 before, 1.73 after",
  then XLA_FLAGS where set."""
  return (f"machine: {info['cpu']}, {info['cpu_count']} cores, jax {info['jax']} on "
          f"{info['device']}; load average (1 min) {info['loadavg_before'][0]:.2f} before, "
          f"{info['loadavg_after'][0]:.2f} after"
          + (f"; XLA_FLAGS={info['xla_flags']!r}" if info.get("xla_flags") else ""))


def write_json(path: str, result: dict[str, Any]) -> None:
  """Writes a results file (creating its folder) and says so."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  print(f"\nwrote {path}")
