"""The benchmark behind `scripts/benchmark.py`: the paper's Tables 2–3 on our models, measured.

For one task (a target, its drafts, fixed-shape prompts) and every (batch, temperature, draft, γ,
variant) setting this measures, in one process and on the same prompts (a `Variant` is the
verification rule, adaptive γ's threshold and the lenience; the default is the paper's exact
token rule at fixed γ):

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

The residual is the time per iteration − (γc + v) × t₁ (t₁: one cached target step, measured
alone), and likewise per baseline step − t₁ for `generate`. Its known parts: each decode's fixed
cost (`fixed_s`: the encoder pass and set-up, paid once per call) spread over the iterations, and
the draft's 2-token catch-up pass beyond one step ((c₂ − c) t₁); what is left of it is the loop's
own overhead (bookkeeping, and the passes costing more inside the decode than alone). At T > 0 the
baseline and speculative samples differ, so S and I count the lengths of different samples
(noisy over few sentences; their expectations agree since both sample the same distribution).

The cost model predicts tokens per call from α for the token rule at fixed γ only. Block
verification's and adaptive γ's tokens per call are MEASURED ONLY (their expectation depends on
more than α: the joint per-position p and q, and where rows stop); for them the rows give the
cost model's speedup from the measured tokens per call and draft passes per iteration,
tokens_per_call / (c · draft passes per iteration + v(γ)), instead of a prediction. Block
verification keeps at least as many tokens in expectation as the token rule, so the token
rule's prediction is a lower bound for it.
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
DRAFT_KINDS = ("t5_shared_encoder", "t5_plain", "t5_distilled", "bigram", "unigram",
               "prompt_lookup")
# The model drafts, by kind; the others are built from training data (or need nothing).
MODEL_KINDS = ("t5_shared_encoder", "t5_plain", "t5_distilled")
DRAFT_LABELS = {"t5_shared_encoder": "shared-encoder draft (distilled)",
                "t5_plain": "T5 draft (plain)", "t5_distilled": "T5 draft (distilled)",
                "bigram": "bigram", "unigram": "unigram", "prompt_lookup": "prompt lookup"}
SHORTFALL = 0.9  # measured/predicted below this gets an explanation (the 10%).


@dataclasses.dataclass(frozen=True)
class Variant:
  """How a setting verifies and drafts: the benchmark's axes beyond draft and γ.

  verification: "token" (the paper's rule) or "block".
  threshold: None (γ tokens every pass) or adaptive γ's `confidence_threshold`.
  lenience: the token rule's lenience (1 = exact; < 1 changes the output distribution).
  gammas: the γ it runs at (the maximum under adaptive γ); None = the benchmark's `gammas`.
  """
  verification: str = "token"
  threshold: float | None = None
  lenience: float = 1.0
  gammas: tuple[int, ...] | None = None

  @property
  def modelled(self) -> bool:
    """The paper's cost model predicts its tokens per call from α (token rule, fixed γ)."""
    return self.verification == "token" and self.threshold is None

  @property
  def label(self) -> str:
    parts = [self.verification]
    if self.threshold is not None:
      parts.append(f"adaptive t={self.threshold:g}")
    if self.lenience != 1.0:
      parts.append(f"lenience {self.lenience:g}")
    return ", ".join(parts)

  def options(self) -> dict[str, Any]:
    """The keyword arguments of `speculative_generate`."""
    return dict(verification=self.verification, confidence_threshold=self.threshold,
                lenience=self.lenience)

  def at_temperature(self, temperature: float) -> "Variant | None":
    """The variant as it runs at `temperature`: at 0 every rule is the greedy one, so block
    becomes token, and lenience (undefined there) drops the variant (None)."""
    if temperature > 0:
      return self
    if self.lenience != 1.0:
      return None
    return dataclasses.replace(self, verification="token")


VARIANT_KEYS = ("verification", "threshold", "lenience", "gammas")


def parse_variants(specs: Sequence[Mapping[str, Any]] | None) -> list[Variant]:
  """gin-friendly dicts (keys `VARIANT_KEYS`) → checked `Variant`s; None or [] = [Variant()]."""
  from specdec.proposal import ConfidenceStop  # pylint: disable=g-import-not-at-top
  from specdec.sampling import Sampling  # pylint: disable=g-import-not-at-top
  from specdec.verification import choose_rule  # pylint: disable=g-import-not-at-top
  out = []
  for spec in specs or [{}]:
    if not isinstance(spec, Mapping) or set(spec) - set(VARIANT_KEYS):
      raise ValueError(f"variants: each must be a dict with keys among {VARIANT_KEYS}, got "
                       f"{spec!r}")
    gammas = spec.get("gammas")
    if gammas is not None:
      gammas = tuple(sorted({int(g) for g in gammas}))
      if not gammas or gammas[0] < 1:
        raise ValueError(f"variants: gammas must be ints >= 1, got {spec['gammas']}")
    variant = Variant(verification=spec.get("verification", "token"),
                      threshold=spec.get("threshold"), lenience=spec.get("lenience", 1.0),
                      gammas=gammas)
    try:  # The checks `speculative_generate` makes, now rather than after the first compiles.
      choose_rule(variant.verification, lenience=variant.lenience,
                  sampling=Sampling(temperature=1.0))
      if variant.threshold is not None:
        ConfidenceStop(variant.threshold)
    except (TypeError, ValueError) as e:
      raise ValueError(f"variants: {spec!r}: {e}") from e
    if variant in out:
      raise ValueError(f"variants: {spec!r} is listed twice")
    out.append(variant)
  return out


def settings_for(gammas: Sequence[int], variants: Sequence[Variant],
                 temperature: float) -> list[tuple[int, Variant]]:
  """The (γ, variant) settings run at `temperature`, without repeats (see `at_temperature`)."""
  out = []
  for variant in variants:
    effective = variant.at_temperature(temperature)
    if effective is None:
      continue
    for gamma in (variant.gammas or gammas):
      if (gamma, effective) not in out:
        out.append((gamma, effective))
  return out


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


def build_drafts(kinds: Sequence[str], *, vocab_size: int,
                 models: Mapping[str, Any] | None = None,
                 train_targets: Iterable[Any] | None = None,
                 ) -> tuple[dict[str, Draft], list[str]]:
  """The drafts named in `kinds` (see `DRAFT_KINDS`), and notes on those skipped.

  Args:
    kinds: draft kinds, in the order wanted.
    vocab_size: the target's vocabulary size.
    models: the model drafts by kind (`MODEL_KINDS`: a kind missing or None is skipped with a
      note).
    train_targets: decoder-side token sequences (EOS included) to fit the bigram/unigram drafts.
  """
  models = dict(models or {})
  unknown = [k for k in kinds if k not in DRAFT_KINDS]
  if unknown:
    raise ValueError(f"kinds: unknown draft kinds {unknown}; known: {list(DRAFT_KINDS)}")
  needs_fit = any(k in ("bigram", "unigram") for k in kinds)
  sequences = list(train_targets) if (needs_fit and train_targets is not None) else None
  if needs_fit and not sequences:
    raise ValueError("train_targets are needed to fit the bigram/unigram drafts")
  drafts, notes = {}, []
  for kind in kinds:
    if kind in MODEL_KINDS:
      model = models.get(kind)
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
                  repeats: int, fill: bool = True, room: int | None = None,
                  in_loop: bool = True, decode_fixed: bool = True) -> dict[str, Any]:
  """t₁ (seconds of one cached target step), v(γ) and c per draft at this batch size; c₂ per
  draft (its 2-token pass over t₁; in-loop only, else None: `propose`'s catch-up feeds the draft
  2 tokens once per iteration, and on a CPU 2 rows can cost well over one); and the fixed cost
  of one decode (`fixed_s`: a 1-token `generate` minus t₁: the encoder pass over
  `encoder_length` tokens, cache set-up and dispatch, which both decoders pay once per call).

  `in_loop` (default): every pass timed inside a jitted loop (`timing.measure_loop_times`), as
  the decoders run them, with no per-call dispatch in t₁, v or c. Otherwise each pass is one
  call (`timing.measure_block_times`; `fill`, `room`: see there; one room for all calls on a
  model compiles its start and single-token step once). `decode_fixed=False` skips `fixed_s`
  (None; it costs a compile of the 1-token `generate`).
  """
  sizes = [1] + [g + 1 for g in gammas]
  costs = _step_costs(target, drafts, batch=batch, gammas=gammas, sizes=sizes,
                      position=position, encoder_length=encoder_length, repeats=repeats,
                      fill=fill, room=room, in_loop=in_loop)
  costs["fixed_s"] = None
  if decode_fixed:
    # What every decode pays once, whatever its length: the encoder pass, set-up, dispatch.
    prompts = timing.random_prompts(batch, encoder_length, target.vocab_size, seed=1)
    one_step = lambda: generate(target, prompts, max_decode_len=1, eos_id=None).tokens
    decode_1_s = timing.median_seconds(one_step, repeats=repeats)
    costs["fixed_s"] = max(decode_1_s - costs["target_step_s"], 0.0)
  return costs


def _step_costs(target, drafts, *, batch, gammas, sizes, position, encoder_length, repeats,
                fill, room, in_loop) -> dict[str, Any]:
  if in_loop:
    models = {"target": target, **{("draft", name): d for name, d in drafts.items()}}
    times = timing.measure_loop_times(
        models, target=target, batch=batch, position=position, repeats=repeats,
        encoder_length=encoder_length, fill=fill,
        sizes={key: (sizes if key == "target" else [1, 2]) for key in models})
    t1 = times[("target", 1)]
    return {"target_step_s": t1, "block_s": {k: times[("target", k)] for k in sizes},
            "v": {g: times[("target", g + 1)] / t1 for g in gammas},
            "c": {name: times[(("draft", name), 1)] / t1 for name in drafts},
            # The draft's 2-token catch-up pass (`proposal.catch_up`), once per iteration.
            "c2": {name: times[(("draft", name), 2)] / t1 for name in drafts},
            "method": "in_loop"}
  room = room or max(sizes)
  times = timing.measure_block_times(target, batch=batch, sizes=sizes, position=position,
                                     repeats=repeats, encoder_length=encoder_length, fill=fill,
                                     room=room)
  c = {name: timing.measure_cost_ratio(target, draft, batch=batch, position=position,
                                       repeats=repeats, encoder_length=encoder_length, fill=fill,
                                       room=room)
       for name, draft in drafts.items()}
  return {"target_step_s": times[1], "block_s": {k: times[k] for k in sizes},
          "v": {g: times[g + 1] / times[1] for g in gammas}, "c": c, "c2": None,
          "method": "one_call"}


def _capture(fn: Callable[[], Any], box: dict, key: Any) -> Callable[[], Any]:
  def run():
    box[key] = fn()
    return box[key]
  return run


def time_unit(target: Any, drafts: Mapping[str, Draft], prompts: np.ndarray, *, batch: int,
              temperature: float, settings: Sequence[tuple[int, "Variant"]],
              max_decode_len: int, repeats: int, seed: int, eos_id: int | None = 1,
              progress: Callable[[str], None] | None = None,
              speculative_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Times the baseline and every (draft, γ, variant) on the prompt groups of one (batch,
  temperature); `settings` are (γ, variant) pairs (`settings_for`).

  `speculative_kwargs` are extra keyword arguments of every `speculative_generate` call.
  Returns {"compile_s": {key: s}, "groups": [{"baseline_s", "baseline_steps", "settings":
  {(draft, γ, variant): {"seconds", "iterations", "draft_passes", counts..., "identical"}}}]};
  key "baseline" or (draft, γ, variant).
  """
  rng = jax.random.PRNGKey(seed) if temperature > 0 else None
  common = dict(max_decode_len=max_decode_len, temperature=temperature, rng=rng, eos_id=eos_id)
  extra = dict(speculative_kwargs or {})

  def fns_for(group):
    fns = {"baseline": lambda: generate(target, group, **common)}
    for name, draft in drafts.items():
      for g, variant in settings:
        fns[(name, g, variant)] = (lambda d, g, variant: lambda: speculative_generate(
            target, d, group, gamma=g, **variant.options(), **common, **extra))(draft, g, variant)
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
    measured = {}
    for key, seconds in medians.items():
      if key == "baseline":
        continue
      result = box[key]
      stats = {name: np.asarray(getattr(result.stats, name))
               for name in ("target_calls", "draft_calls", "accepted", "rejected", "drafted")}
      # The row decoding longest took part in every iteration, so its draft passes are the
      # loop's (rows share the batched passes).
      measured[key] = dict(
          seconds=seconds, iterations=int(stats["target_calls"].max()),
          draft_passes=int(stats["draft_calls"].max()),
          target_calls=int(stats["target_calls"].sum()), accepted=int(stats["accepted"].sum()),
          rejected=int(stats["rejected"].sum()), drafted=int(stats["drafted"].sum()),
          identical=bool(np.array_equal(np.asarray(result.tokens), base_tokens)))
    out.append(dict(baseline_s=medians["baseline"], settings=measured, baseline_steps=int(
        decode_lengths(base_tokens, eos_id=eos_id, max_decode_len=max_decode_len).max())))
    if progress:
      progress(f"group {i + 1}/{len(groups)}")
  return {"compile_s": compile_s, "groups": out}


def explain(row: Mapping[str, Any]) -> str:
  """Where a setting's time goes, in words (the decomposition in the module docstring)."""
  def part(key: str, what: str) -> str:
    value = row.get(key)
    return f"{what} {'not measured' if value is None else f'{value:.3f} ms'}"
  return (f"measured/predicted {row['ratio_v']:.2f} = token factor {row['token_factor']:.2f} "
          f"({row['steps_per_iteration']:.2f} baseline steps per iteration realised vs "
          f"{row['expected_tokens']:.2f} expected from alpha) x cost factor "
          f"{row['cost_factor']:.2f} (an iteration cost {row['cost_per_iteration_in_steps']:.2f} "
          f"baseline steps vs gamma*c+v = {row['predicted_cost_in_steps']:.2f}); residual "
          f"{row['overhead_ms_per_iteration']:.3f} ms/iteration "
          f"({row['overhead_share']:.0%} of {row['ms_per_iteration']:.3f} ms; of it: "
          f"{part('fixed_ms_per_iteration', 'the per-decode fixed cost spread over iterations')}, "
          f"{part('catch_up_ms_per_iteration', 'the draft 2-token catch-up beyond one step')}, "
          f"{part('loop_overhead_ms_per_iteration', 'the rest (the loop itself)')}) vs "
          f"{row['baseline_overhead_ms_per_step']:.3f} ms per baseline step "
          f"({part('baseline_loop_overhead_ms_per_step', 'after its fixed cost')}; "
          f"t1 = {row['target_step_ms']:.3f} ms)")


def make_row(*, task: str, draft: str, temperature: float, gamma: int, batch: int,
             costs: Mapping[str, Any], groups: Sequence[Mapping[str, Any]], compile_s: float,
             variant: Variant = Variant()) -> dict[str, Any]:
  """One table row from the costs of its batch size and its timed groups (see `time_unit`)."""
  key = (draft, gamma, variant)
  per = [g["settings"][key] for g in groups]
  total = lambda name: sum(p[name] for p in per)
  accepted, rejected = total("accepted"), total("rejected")
  calls, iterations = total("target_calls"), total("iterations")
  base_s = sum(g["baseline_s"] for g in groups)
  spec_s = total("seconds")
  steps = sum(g["baseline_steps"] for g in groups)
  alpha = analysis.alpha_from_counts(accepted, rejected)
  c, v, t1 = costs["c"][draft], costs["v"][gamma], costs["target_step_s"]
  modelled = variant.modelled
  passes = total("draft_passes") / iterations  # γ at fixed γ.
  cost_in_steps = passes * c + v
  # One of those passes is the 2-token catch-up: c₂ where measured (in-loop costs), else c.
  c2 = (costs.get("c2") or {}).get(draft)
  catch_up_extra = 0.0 if c2 is None else c2 - c
  row = dict(
      task=task, draft=draft, temperature=float(temperature), gamma=int(gamma), batch=int(batch),
      verification=variant.verification, threshold=variant.threshold,
      lenience=variant.lenience, variant=variant.label, exact=variant.lenience == 1.0,
      num_groups=len(groups), accepted=accepted, rejected=rejected, drafted=total("drafted"),
      target_calls=calls, alpha=alpha, tokens_per_call=(accepted + calls) / calls,
      drafted_per_call=total("drafted") / calls, draft_passes_per_iteration=passes,
      expected_tokens=analysis.expected_tokens(alpha, gamma) if modelled else None, c=c, v=v,
      c2=c2, catch_up_extra_steps=catch_up_extra,
      predicted_speedup_paper=(analysis.walltime_improvement(alpha, gamma, c) if modelled
                               else None),
      predicted_speedup_v=(analysis.walltime_improvement(alpha, gamma, c, v) if modelled
                           else None),
      baseline_s=base_s, speculative_s=spec_s, measured_speedup=base_s / spec_s,
      median_group_speedup=float(np.median([g["baseline_s"] / p["seconds"]
                                            for g, p in zip(groups, per)])),
      iterations=iterations, baseline_steps=steps,
      target_step_ms=t1 * 1e3, ms_per_iteration=spec_s * 1e3 / iterations,
      ms_per_baseline_step=base_s * 1e3 / steps,
      predicted_cost_in_steps=cost_in_steps,
      predicted_ms_per_iteration=cost_in_steps * t1 * 1e3,
      identical_to_baseline=(all(p["identical"] for p in per) if temperature == 0 else None),
      compile_s=compile_s)
  ratio = lambda a, b: None if a is None or b is None else a / b
  # None or absent: not measured (measure_costs(decode_fixed=False); paper_regime's own costs).
  fixed = costs.get("fixed_s")
  row["fixed_ms_per_decode"] = None if fixed is None else fixed * 1e3
  row["predicted_speedup_decode"] = (
      decode_speedup(row["expected_tokens"],
                     iteration_cost_in_steps(draft_passes=passes, c=c, v=v, c2=c2), steps=steps,
                     decodes=len(groups), fixed_in_steps=fixed / t1)
      if modelled and fixed is not None else None)
  row["ratio_decode"] = ratio(row["measured_speedup"], row["predicted_speedup_decode"])
  row["speedup_from_measured_tokens"] = row["tokens_per_call"] / cost_in_steps
  row["ratio_paper"] = ratio(row["measured_speedup"], row["predicted_speedup_paper"])
  row["ratio_v"] = ratio(row["measured_speedup"], row["predicted_speedup_v"])
  row["steps_per_iteration"] = steps / iterations
  row["cost_per_iteration_in_steps"] = row["ms_per_iteration"] / row["ms_per_baseline_step"]
  row["token_factor"] = ratio(row["steps_per_iteration"], row["expected_tokens"])
  row["cost_factor"] = row["predicted_cost_in_steps"] / row["cost_per_iteration_in_steps"]
  row["overhead_ms_per_iteration"] = row["ms_per_iteration"] - row["predicted_ms_per_iteration"]
  row["overhead_share"] = row["overhead_ms_per_iteration"] / row["ms_per_iteration"]
  row["baseline_overhead_ms_per_step"] = row["ms_per_baseline_step"] - row["target_step_ms"]
  # The residual's known parts (None where not measured) and what is left: the loop itself.
  row["fixed_ms_per_iteration"] = (None if fixed is None
                                   else fixed * 1e3 * len(groups) / iterations)
  row["catch_up_ms_per_iteration"] = None if c2 is None else catch_up_extra * t1 * 1e3
  row["loop_overhead_ms_per_iteration"] = (
      None if fixed is None or c2 is None else row["overhead_ms_per_iteration"]
      - row["fixed_ms_per_iteration"] - row["catch_up_ms_per_iteration"])
  row["baseline_loop_overhead_ms_per_step"] = (
      None if fixed is None else row["baseline_overhead_ms_per_step"] - fixed * 1e3
      * len(groups) / steps)
  row["shortfall"] = modelled and row["ratio_v"] < SHORTFALL
  row["explanation"] = explain(row) if row["shortfall"] else None
  return row


def iteration_cost_in_steps(*, draft_passes: float, c: float, v: float,
                            c2: float | None = None) -> float:
  """What one speculative iteration costs in target steps: `draft_passes` draft passes of c and
  one (γ+1)-token verify pass of v; with c₂ measured, one of those passes is `propose`'s 2-token
  catch-up, at c₂ instead of c."""
  return draft_passes * c + v + (0.0 if c2 is None else c2 - c)


def decode_speedup(expected_tokens: float, cost_in_steps: float, *, steps: int, decodes: int,
                   fixed_in_steps: float) -> float:
  """The cost model's speedup of whole decodes: S baseline steps over `decodes` calls, each call
  paying `fixed_in_steps` target steps once (the encoder pass) on both sides, the speculative
  loop S / expected_tokens iterations of `cost_in_steps` (γc + v) each. With no fixed cost it
  is the v-aware prediction, expected_tokens / cost_in_steps."""
  fixed = decodes * fixed_in_steps
  return (fixed + steps) / (fixed + steps / expected_tokens * cost_in_steps)


def run_task(setup: TaskSetup, *, temperatures: Sequence[float], gammas: Sequence[int],
             batch_sizes: Sequence[int], max_decode_len: int, repeats: int,
             timing_repeats: int, seed: int = 0, eos_id: int | None = 1,
             variants: Sequence[Variant] = (Variant(),),
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """Every row of one task: batch × temperature × draft × (γ, variant) (see the module
  docstring; `settings_for` says which (γ, variant) run at a temperature).

  Returns {"rows": [...], "costs": {batch: costs}, "compiles": n, "compile_s": total}.
  """
  gammas = sorted({int(g) for g in gammas})
  if not gammas or gammas[0] < 1:
    raise ValueError(f"gammas must be ints >= 1, got {gammas}")
  if repeats < 1 or timing_repeats < 1:
    raise ValueError(f"repeats and timing_repeats must be >= 1, got {repeats}, {timing_repeats}")
  if not setup.drafts:
    raise ValueError(f"task {setup.name}: no drafts to benchmark")
  variants = list(variants) or [Variant()]
  all_gammas = sorted(set(gammas) | {g for v in variants for g in (v.gammas or ())})
  prompts = np.asarray(setup.prompts, np.int32)
  rows, all_costs, compiles, compile_total = [], {}, 0, 0.0
  for batch in batch_sizes:
    start = time.perf_counter()
    costs = measure_costs(setup.target, setup.drafts, batch=batch, gammas=all_gammas,
                          position=max_decode_len // 2, encoder_length=prompts.shape[1],
                          repeats=timing_repeats)
    all_costs[batch] = costs
    log(f"[{setup.name}] batch {batch}: t1 {costs['target_step_s'] * 1e3:.3f} ms, fixed "
        f"{(costs['fixed_s'] or 0.0) * 1e3:.1f} ms per decode, "
        f"v {', '.join(f'{g}:{v:.2f}' for g, v in costs['v'].items())}, "
        f"c {', '.join(f'{k}:{c:.3f}' for k, c in costs['c'].items())} "
        f"({time.perf_counter() - start:.0f} s)")
    for temperature in temperatures:
      start = time.perf_counter()
      settings = settings_for(gammas, variants, temperature)
      unit = time_unit(setup.target, setup.drafts, prompts, batch=batch,
                       temperature=temperature, settings=settings,
                       max_decode_len=max_decode_len, repeats=repeats, seed=seed, eos_id=eos_id)
      compiles += len(unit["compile_s"])
      compile_total += sum(unit["compile_s"].values())
      for draft in setup.drafts:
        for gamma, variant in settings:
          row = make_row(task=setup.name, draft=draft, temperature=temperature, gamma=gamma,
                         batch=batch, costs=costs, groups=unit["groups"], variant=variant,
                         compile_s=unit["compile_s"][(draft, gamma, variant)])
          rows.append(row)
          predicted = ("" if row["predicted_speedup_v"] is None else
                       f", predicted {row['predicted_speedup_decode']:.2f}x (v + encoder), "
                       f"{row['predicted_speedup_v']:.2f}x (v), "
                       f"{row['predicted_speedup_paper']:.2f}x (paper)")
          log(f"  T={temperature:g} b={batch} {draft:>13} γ={gamma} [{variant.label}]: "
              f"α {row['alpha']:.2f}, tok/call {row['tokens_per_call']:.2f}, measured "
              f"{row['measured_speedup']:.2f}x{predicted}")
      log(f"[{setup.name}] batch {batch} T={temperature:g}: {len(unit['compile_s'])} compiles "
          f"{sum(unit['compile_s'].values()):.0f} s, total {time.perf_counter() - start:.0f} s")
  return {"rows": rows, "costs": all_costs, "compiles": compiles, "compile_s": compile_total}


def _setting(row: Mapping[str, Any]) -> tuple:
  return (row["task"], row["draft"], row["temperature"], row["batch"])


def best_gamma_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
  """Per (task, draft, temperature, batch, variant): the γ with the best measured speedup, and
  the γ the cost model would pick (paper and v-aware) among the γ measured (None where the
  model does not predict the variant)."""
  settings: dict[tuple, list] = {}
  for row in rows:
    settings.setdefault(_setting(row) + (row["variant"],), []).append(row)
  out = []
  for (task, draft, temperature, batch, variant), group in settings.items():
    best = max(group, key=lambda r: r["measured_speedup"])
    modelled = best["predicted_speedup_v"] is not None
    pred_v = max(group, key=lambda r: r["predicted_speedup_v"]) if modelled else None
    pred_p = max(group, key=lambda r: r["predicted_speedup_paper"]) if modelled else None
    out.append(dict(task=task, draft=draft, temperature=temperature, batch=batch,
                    variant=variant, best_gamma=best["gamma"], alpha=best["alpha"],
                    tokens_per_call=best["tokens_per_call"],
                    measured_speedup=best["measured_speedup"],
                    predicted_speedup_v=best["predicted_speedup_v"],
                    ratio_v=best["ratio_v"],
                    predicted_speedup_decode=best.get("predicted_speedup_decode"),
                    ratio_decode=best.get("ratio_decode"),
                    predicted_best_gamma_v=pred_v["gamma"] if pred_v else None,
                    predicted_best_gamma_paper=pred_p["gamma"] if pred_p else None,
                    measured_at_predicted_gamma_v=(pred_v["measured_speedup"] if pred_v
                                                   else None)))
  return out


# The paper's Table 5 (EnDe, T5-XXL target, T5-small draft, T = 1) as quoted in issue 16: α at
# lenience 1 and 0.1 (the values between were not available to this project).
PAPER_TABLE5_ALPHA = {1.0: 0.62, 0.1: 0.84}


def comparisons(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
  """What the variants add, from the rows: token vs block at the same (γ, threshold), the best
  fixed γ vs the best adaptive γ per rule, and α against lenience."""
  exact = [r for r in rows if r["exact"]]
  index = {_setting(r) + (r["gamma"], r["verification"], r["threshold"]): r for r in exact}
  token_vs_block = []
  for r in exact:
    token = index.get(_setting(r) + (r["gamma"], "token", r["threshold"]))
    if r["verification"] != "block" or token is None:
      continue
    token_vs_block.append(dict(
        task=r["task"], draft=r["draft"], temperature=r["temperature"], batch=r["batch"],
        gamma=r["gamma"], threshold=r["threshold"],
        tokens_per_call_token=token["tokens_per_call"], tokens_per_call_block=r["tokens_per_call"],
        tokens_per_call_gain=r["tokens_per_call"] - token["tokens_per_call"],
        speedup_token=token["measured_speedup"], speedup_block=r["measured_speedup"],
        speedup_ratio=r["measured_speedup"] / token["measured_speedup"]))
  groups: dict[tuple, list] = {}
  for r in exact:
    groups.setdefault(_setting(r) + (r["verification"],), []).append(r)
  fixed_vs_adaptive = []
  for key, group in groups.items():
    fixed = [r for r in group if r["threshold"] is None]
    adaptive = [r for r in group if r["threshold"] is not None]
    if not fixed or not adaptive:
      continue
    f = max(fixed, key=lambda r: r["measured_speedup"])
    a = max(adaptive, key=lambda r: r["measured_speedup"])
    fixed_vs_adaptive.append(dict(
        task=key[0], draft=key[1], temperature=key[2], batch=key[3], verification=key[4],
        fixed_gamma=f["gamma"], fixed_speedup=f["measured_speedup"],
        fixed_tokens_per_call=f["tokens_per_call"], adaptive_gamma=a["gamma"],
        adaptive_threshold=a["threshold"], adaptive_speedup=a["measured_speedup"],
        adaptive_tokens_per_call=a["tokens_per_call"],
        adaptive_drafted_per_call=a["drafted_per_call"],
        adaptive_draft_passes_per_iteration=a["draft_passes_per_iteration"],
        gain=a["measured_speedup"] / f["measured_speedup"]))
  lenient: dict[tuple, list] = {}
  for r in rows:
    if r["verification"] == "token" and r["threshold"] is None:
      lenient.setdefault(_setting(r) + (r["gamma"],), []).append(r)
  lenience = []
  for key, group in lenient.items():
    if len(group) < 2:
      continue
    for r in sorted(group, key=lambda r: -r["lenience"]):
      lenience.append(dict(task=key[0], draft=key[1], temperature=key[2], batch=key[3],
                           gamma=key[4], lenience=r["lenience"], alpha=r["alpha"],
                           tokens_per_call=r["tokens_per_call"],
                           measured_speedup=r["measured_speedup"],
                           paper_alpha=PAPER_TABLE5_ALPHA.get(r["lenience"])))
  return {"token_vs_block": token_vs_block, "fixed_vs_adaptive": fixed_vs_adaptive,
          "lenience": lenience}


def _fmt(x: Any, digits: int = 2) -> str:
  if x is None:
    return "–"
  if isinstance(x, float):
    return f"{x:.{digits}f}" if math.isfinite(x) else "nan"
  return str(x)


def _x(x: Any) -> str:
  return "–" if x is None else f"{_fmt(x)}x"


def _lead(row: Mapping[str, Any]) -> str:
  """A table row's first cells: task, batch, draft, temperature."""
  return (f"| {row['task']} | {row['batch']} | {DRAFT_LABELS.get(row['draft'], row['draft'])} "
          f"| {row['temperature']:g} | ")


def _table(title: str, intro: str, columns: Sequence[tuple[str, Callable[[Any], str]]],
           items: Sequence[Mapping[str, Any]]) -> list[str]:
  """A markdown section: task, batch, draft, temperature, then (header, cell) `columns`."""
  lines = ["", f"## {title}", "", intro, "",
           "| Task | Batch | Draft | Temp | " + " | ".join(h for h, _ in columns) + " |",
           "|" + "---|" * (4 + len(columns))]
  return lines + [_lead(c) + " | ".join(cell(c) for _, cell in columns) + " |" for c in items]


def comparison_markdown(comp: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[str]:
  """The comparison tables of `comparisons` (empty sections are left out)."""
  get = lambda key, show=_fmt: lambda c: show(c[key])
  lines = []
  if comp.get("token_vs_block"):
    lines += _table(
        "Token vs block verification", "Same (γ, threshold), same prompts; block verification "
        "is exact and keeps at least as many tokens in expectation.",
        [("γ", get("gamma")), ("threshold", get("threshold")),
         ("tokens/call token", get("tokens_per_call_token")),
         ("tokens/call block", get("tokens_per_call_block")),
         ("gain", lambda c: f"{c['tokens_per_call_gain']:+.2f}"),
         ("speedup token", get("speedup_token", _x)), ("speedup block", get("speedup_block", _x)),
         ("block/token", get("speedup_ratio"))], comp["token_vs_block"])
  if comp.get("fixed_vs_adaptive"):
    lines += _table(
        "Best fixed γ vs adaptive γ", "Per rule: the fixed γ and the (γ max, threshold) with the "
        "best measured speedup.",
        [("verification", get("verification")), ("best fixed γ", get("fixed_gamma")),
         ("speedup", get("fixed_speedup", _x)), ("tokens/call", get("fixed_tokens_per_call")),
         ("adaptive γ max", get("adaptive_gamma")), ("threshold", get("adaptive_threshold")),
         ("speedup", get("adaptive_speedup", _x)),
         ("tokens/call", get("adaptive_tokens_per_call")),
         ("drafted/call", get("adaptive_drafted_per_call")),
         ("draft passes/iteration", get("adaptive_draft_passes_per_iteration")),
         ("adaptive/fixed", get("gain"))], comp["fixed_vs_adaptive"])
  if comp.get("lenience"):
    lines += _table(
        "α against lenience (NOT exact below 1)", "The paper's Table 5 (EnDe, T5-XXL target, "
        "T5-small draft, T = 1) as quoted in issue 16: α 0.62 at l = 1, 0.84 at l = 0.1.",
        [("γ", get("gamma")), ("lenience", get("lenience")), ("α", get("alpha")),
         ("tokens/call", get("tokens_per_call")), ("speedup", get("measured_speedup", _x)),
         ("paper α", get("paper_alpha"))], comp["lenience"])
  return lines


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
            "model (1 − α^(γ+1)) / ((1 − α)(γc + v)) with v = 1 (paper) or the measured v(γ), "
            "and \"v + encoder\": the same per iteration with the draft's 2-token catch-up pass at "
            "its measured cost c₂ (instead of c), over whole decodes that each also pay "
            "the encoder pass and set-up once on both sides (`decode_speedup`; fixed ms per "
            "decode below), for the token rule at fixed γ only; block verification and "
            "adaptive γ are "
            "measured only (–), see \"From measured tokens/call\" below. Lenience < 1 is not "
            "exact (it changes the output distribution). α for block verification is "
            "accepted / (accepted + rejected iterations), not the paper's per-token α.", "",
            "## Results", "",
            "| Task | Batch | Draft | Temp | γ | verification | threshold | lenience | α "
            "| tokens/call | drafted/call | c | c₂ | v(γ) | predicted (paper) "
            "| predicted (v-aware) | predicted (v + encoder) | measured | measured/predicted (paper) "
            "| measured/predicted (v-aware) | measured/predicted (v + encoder) |",
            "|" + "---|" * 21]
  for r in rows:
    lines.append(f"| {r['task']} | {r['batch']} | {DRAFT_LABELS.get(r['draft'], r['draft'])} | "
                 f"{r['temperature']:g} | {r['gamma']} | {r['verification']} | "
                 f"{_fmt(r['threshold'])} | {_fmt(r['lenience'])} | {_fmt(r['alpha'])} | "
                 f"{_fmt(r['tokens_per_call'])} | {_fmt(r['drafted_per_call'])} | "
                 f"{_fmt(r['c'], 3)} | {_fmt(r.get('c2'), 3)} | {_fmt(r['v'])} | "
                 f"{_x(r['predicted_speedup_paper'])} | "
                 f"{_x(r['predicted_speedup_v'])} | {_x(r.get('predicted_speedup_decode'))} | "
                 f"{_x(r['measured_speedup'])} | {_fmt(r['ratio_paper'])} | "
                 f"{_fmt(r['ratio_v'])} | {_fmt(r.get('ratio_decode'))} |")
  lines += ["", "## Best γ per setting", "",
            "| Task | Batch | Draft | Temp | variant | best γ (measured) | α | tokens/call "
            "| measured | predicted (v-aware) | measured/predicted | predicted (v + encoder) "
            "| measured/predicted (v + encoder) | model's γ (v-aware) | model's γ (paper) |",
            "|" + "---|" * 15]
  for b in result["best"]:
    lines.append(f"| {b['task']} | {b['batch']} | {DRAFT_LABELS.get(b['draft'], b['draft'])} | "
                 f"{b['temperature']:g} | {b['variant']} | {b['best_gamma']} | "
                 f"{_fmt(b['alpha'])} | {_fmt(b['tokens_per_call'])} | "
                 f"{_x(b['measured_speedup'])} | {_x(b['predicted_speedup_v'])} | "
                 f"{_fmt(b['ratio_v'])} | {_x(b.get('predicted_speedup_decode'))} | "
                 f"{_fmt(b.get('ratio_decode'))} | {_fmt(b['predicted_best_gamma_v'])} | "
                 f"{_fmt(b['predicted_best_gamma_paper'])} |")
  lines += comparison_markdown(result.get("comparisons") or comparisons(rows))
  lines += ["", "## Where the time goes", "",
            "Per iteration (one target call): measured ms vs the model's (passes·c + v(γ)) × t1 "
            "(passes: draft passes per iteration, γ at fixed γ; t1 = one cached target step "
            "measured alone); the residual is the rest, and the loop's own part of it is what "
            "is left after each decode's fixed cost (spread over its iterations) and the "
            "draft's 2-token catch-up beyond one step. Baseline: ms per `generate` step and its "
            "overhead over t1. measured/predicted = token factor × cost factor. "
            "From measured tokens/call: tokens/call / (passes·c + v), the cost model's speedup "
            "given the tokens actually kept.", "",
            "| Task | Batch | Draft | Temp | γ | variant | iterations | draft passes/iteration "
            "| ms/iteration | predicted ms/iteration | residual ms/iteration "
            "| loop's own ms/iteration | baseline ms/step "
            "| t1 ms | fixed ms/decode | steps/iteration | expected tokens | token factor "
            "| cost factor | from measured tokens/call |",
            "|" + "---|" * 20]
  for r in rows:
    lines.append(f"| {r['task']} | {r['batch']} | {DRAFT_LABELS.get(r['draft'], r['draft'])} | "
                 f"{r['temperature']:g} | {r['gamma']} | {r['variant']} | {r['iterations']} | "
                 f"{_fmt(r['draft_passes_per_iteration'])} | "
                 f"{_fmt(r['ms_per_iteration'], 3)} | {_fmt(r['predicted_ms_per_iteration'], 3)} "
                 f"| {_fmt(r['overhead_ms_per_iteration'], 3)} | "
                 f"{_fmt(r.get('loop_overhead_ms_per_iteration'), 3)} | "
                 f"{_fmt(r['ms_per_baseline_step'], 3)} | {_fmt(r['target_step_ms'], 3)} | "
                 f"{_fmt(r.get('fixed_ms_per_decode'), 1)} | {_fmt(r['steps_per_iteration'])} | "
                 f"{_fmt(r['expected_tokens'])} | "
                 f"{_fmt(r['token_factor'])} | {_fmt(r['cost_factor'])} | "
                 f"{_x(r['speedup_from_measured_tokens'])} |")
  short = [r for r in rows if r["shortfall"]]
  lines += ["", f"## Settings more than {1 - SHORTFALL:.0%} short of the v-aware prediction "
            f"({len(short)} of {len(rows)})", ""]
  for r in short:
    lines.append(f"- {r['task']} b={r['batch']} {r['draft']} T={r['temperature']:g} "
                 f"γ={r['gamma']} [{r['variant']}]: {r['explanation']}")
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
  (rows); one PNG per (task, batch); fixed γ, exact rules (block verification measured only).
  Returns the paths written."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []
  for task, batch in sorted({(r["task"], r["batch"]) for r in rows}):
    sub = [r for r in rows if r["task"] == task and r["batch"] == batch
           and r["threshold"] is None and r["exact"]]
    if not sub:
      continue
    drafts = list(dict.fromkeys(r["draft"] for r in sub))
    temps = sorted({r["temperature"] for r in sub})
    fig, axes = plt.subplots(len(temps), len(drafts), squeeze=False, sharex=True,
                             figsize=(3.2 * len(drafts), 2.8 * len(temps)))
    for i, temp in enumerate(temps):
      for j, draft in enumerate(drafts):
        ax = axes[i][j]
        here = [r for r in sub if r["draft"] == draft and r["temperature"] == temp]
        pts = sorted((r for r in here if r["verification"] == "token"), key=lambda r: r["gamma"])
        block = sorted((r for r in here if r["verification"] == "block"),
                       key=lambda r: r["gamma"])
        if block:
          ax.plot([r["gamma"] for r in block], [r["measured_speedup"] for r in block], "d-",
                  label="measured (block)")
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
  """The result written as JSON: metadata, config, notes, costs, rows, best γ per setting and
  the variants' comparisons (and, with `profile` a trace directory, the trace's top events)."""
  return {"metadata": dict(metadata), "config": dict(config), "notes": list(notes),
          "costs": dict(costs), "rows": list(rows), "best": best_gamma_rows(rows),
          "comparisons": comparisons(rows),
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
