r"""specdec against the implementation most people would otherwise pick: Hugging Face transformers.

    pip install -e '.[peer]'
    python scripts/compare_hf.py                       # 16 test sentences, gamma 4
    python scripts/compare_hf.py --num_sentences=4 --repeats=1 --max_decode_len=16   # quick

Exports the shipped pair's weights into transformers' `T5ForConditionalGeneration`
(`specdec.hf_export`) and decodes the same prompts (test sentences of the pair's task, batch 1,
the same token ids) in one process on the same CPU cores with four methods:

  hf_greedy       transformers `generate` (greedy) with the exported target.
  hf_assisted     transformers assisted generation: the exported draft as `assistant_model`,
                  a fixed K = gamma draft tokens per target pass.
  specdec_greedy  `specdec.generate` with the target.
  specdec_spec    `specdec.speculative_generate` with target and the same T5 draft, same gamma.
  specdec_shared  (when the pair's default draft reads the target's encoder, a
                  `SharedEncoderDraft`, which transformers has no counterpart for)
                  `specdec.speculative_generate` with that draft, the same gamma.

transformers' assistant must be a T5 with its own encoder: the pair's `draft` if it is one, else
its `draft_small`; specdec_spec uses that same T5, so the two speculative rows compare libraries,
not drafts.

Each method is run once first (warm-up: XLA compiles specdec's loops; torch warms its kernels),
then `--repeats` times per prompt, interleaved, and the median per prompt is kept. ms/token is
(sum over prompts of the median time) / (sum of generated tokens, EOS included). Speedups are
against each library's own greedy baseline (and against transformers greedy). All four greedy
outputs must be token-for-token equal (HF's leading decoder start token 0 removed, compared up to
and including EOS); the script exits non-zero if they are not.

How transformers 4.57 is set up for a fair, fixed-K comparison (its defaults are adaptive):
  * On the ASSISTANT's `generation_config`: `num_assistant_tokens=gamma`,
    `num_assistant_tokens_schedule='constant'` (the default 'heuristic' grows/shrinks K every
    iteration), `assistant_confidence_threshold=0` (the default 0.4 stops drafting early when
    the draft is unsure; 0 disables that stopping criterion). transformers reads these from the
    assistant, not from the `generate` call or the main model's config.
  * Encoder-decoder assistants are supported in 4.57 (the assistant runs its own encoder once per
    `generate` call on the same `input_ids`/`attention_mask`); batch size must be 1.
  * `--fixed_length` decodes exactly `--max_decode_len` tokens: `eos_token_id=None` in the main
    `generate` call (transformers copies the main model's EOS onto the assistant's
    generation_config) and `eos_id=None` in specdec.
  * transformers 4.57 sizes the default greedy cache by the encoder's depth (`num_layers`), which
    breaks when `num_decoder_layers` is larger; greedy calls get an empty, lazily grown
    `EncoderDecoderCache` instead (assisted generation already builds one that way).
  * Both libraries see the same encoder ids, padded with 0 to `--input_len` (specdec compiles one
    shape for all prompts), and transformers gets `attention_mask = ids > 0`; the padded
    positions cost both the same encoder work.

Threads: OMP_WAIT_POLICY defaults to PASSIVE (see --omp_wait_policy: with libgomp's default
spin-waiting, torch on 2 threads ran ~40x slower on this shared 2-core machine while other jobs
were running, which would make the comparison meaningless). The process is pinned to `--cpus`
cores (`os.sched_setaffinity`, before JAX or torch is
imported, so XLA's thread pool is sized to them too) and `torch.set_num_threads(--cpus)`. JAX
runs on the CPU. Target and draft passes are counted with forward pre-hooks on the transformers
models (a Python counter increment per pass, negligible next to a T5 forward).

Writes `--output` (JSON: settings, machine, per-prompt times and counts, summary) and prints a
markdown table.
"""

from __future__ import annotations

import os
import sys

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_PAIR = flags.DEFINE_string("pair", "ende", "Shipped pair (see specdec.pretrained.names()).")
_NUM = flags.DEFINE_integer("num_sentences", 16, "Test sentences to decode (batch 1 each).")
_GAMMA = flags.DEFINE_integer("gamma", 4, "Draft tokens per target pass (both libraries).")
_MAX_LEN = flags.DEFINE_integer("max_decode_len", 64, "Decoded tokens at most, per sentence.")
_INPUT_LEN = flags.DEFINE_integer("input_len", 64, "Encoder inputs are padded to this length.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per sentence and method (median).")
_CPUS = flags.DEFINE_integer("cpus", 2, "CPU cores for the process; torch threads.")
_OMP_WAIT = flags.DEFINE_enum(
    "omp_wait_policy", "PASSIVE", ["PASSIVE", "ACTIVE"],
    "OMP_WAIT_POLICY for torch's OpenMP threads (unless already set in the environment). "
    "ACTIVE (libgomp's default) spin-waits, which on a machine with other busy processes made "
    "torch ~40x slower here; PASSIVE sleeps between parallel regions.")
_FIXED = flags.DEFINE_bool("fixed_length", False,
                           "Ignore EOS: every method decodes exactly max_decode_len tokens.")
_OUTPUT = flags.DEFINE_string("output", "results/compare_hf.json", "JSON report path.")

METHODS = ("hf_greedy", "hf_assisted", "specdec_greedy", "specdec_spec")
BASELINE = {"hf_greedy": "hf_greedy", "hf_assisted": "hf_greedy",
            "specdec_greedy": "specdec_greedy", "specdec_spec": "specdec_greedy",
            "specdec_shared": "specdec_greedy"}


def _pin_cpus(n: int) -> list[int]:
  available = sorted(os.sched_getaffinity(0))
  if n < 1:
    raise ValueError(f"--cpus must be positive, got {n}")
  chosen = available[:n]
  os.sched_setaffinity(0, chosen)
  return chosen


def trim(row, *, eos_id: int | None, length: int) -> list[int]:
  """A decoded row → its tokens up to and including the first EOS (all `length` without EOS)."""
  row = [int(t) for t in row][:length]
  if eos_id is not None and eos_id in row:
    return row[:row.index(eos_id) + 1]
  return row


def main(argv):
  del argv
  for name, flag in (("num_sentences", _NUM), ("gamma", _GAMMA), ("max_decode_len", _MAX_LEN),
                     ("input_len", _INPUT_LEN), ("repeats", _REPEATS)):
    if flag.value < 1:
      raise app.UsageError(f"--{name} must be positive, got {flag.value}")
  cpus = _pin_cpus(_CPUS.value)
  os.environ.setdefault("OMP_WAIT_POLICY", _OMP_WAIT.value)  # Read when torch loads libgomp.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

  import time  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  import platform  # pylint: disable=g-import-not-at-top

  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit(f"compare_hf.py needs the peer extra: pip install -e '.[peer]' ({e})")

  import specdec  # pylint: disable=g-import-not-at-top
  from specdec import data, hf_export, pretrained  # pylint: disable=g-import-not-at-top

  logging.set_verbosity(logging.WARNING)
  transformers.logging.set_verbosity_error()
  torch.set_num_threads(len(cpus))
  jax.config.update("jax_platforms", "cpu")

  load_at_start = os.getloadavg()
  if load_at_start[0] > len(cpus):
    print(f"warning: load average {load_at_start[0]:.1f} > {len(cpus)} cores: other processes "
          "compete for the CPU, timings will be noisy", flush=True)
  gamma, max_len = _GAMMA.value, _MAX_LEN.value
  eos_id = None if _FIXED.value else 1
  pair = pretrained.load(_PAIR.value)
  def describe(model):
    c = model.config
    return (f"{model.num_params / 1e6:.2f}M params ({'/'.join(c.mlp_activations)}, "
            f"tied={c.logits_via_embedding})")

  t5_draft = pair.draft if isinstance(pair.draft, specdec.T5Model) else pair.draft_small
  if t5_draft is None:
    raise SystemExit(f"pair {pair.name!r} has no T5 draft for transformers' assisted generation")
  methods = METHODS if t5_draft is pair.draft else METHODS + ("specdec_shared",)
  print(f"pair {pair.name!r}: target {describe(pair.target)}, T5 draft {describe(t5_draft)}"
        + ("" if t5_draft is pair.draft else
           f", shared-encoder draft {pair.draft.num_params / 1e6:.2f}M params"))
  hf_target = hf_export.to_hf(pair.target)
  hf_draft = hf_export.to_hf(t5_draft)
  # Fixed K = gamma: these are read from the assistant's generation_config (see the docstring).
  hf_draft.generation_config.num_assistant_tokens = gamma
  hf_draft.generation_config.num_assistant_tokens_schedule = "constant"
  hf_draft.generation_config.assistant_confidence_threshold = 0.0

  calls = {"target": 0, "draft": 0}

  def counter(key):
    def hook(module, args, kwargs):
      del module, args, kwargs
      calls[key] += 1
    return hook

  hf_target.register_forward_pre_hook(counter("target"), with_kwargs=True)
  hf_draft.register_forward_pre_hook(counter("draft"), with_kwargs=True)

  sources = [src for src, _ in data.read_pairs(pair.task, "test")][:_NUM.value]
  tokens = pair.encode(sources, max_length=_INPUT_LEN.value)
  tokens = np.pad(tokens, ((0, 0), (0, _INPUT_LEN.value - tokens.shape[1])))

  hf_kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=max_len, eos_token_id=eos_id,
                   pad_token_id=0, decoder_start_token_id=0)

  def hf_inputs(row):
    ids = torch.tensor(row, dtype=torch.long)
    return dict(input_ids=ids, attention_mask=(ids > 0).long())

  def hf_greedy(row):
    with torch.inference_mode():
      cache = transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                               transformers.DynamicCache())
      out = hf_target.generate(**hf_inputs(row), past_key_values=cache, **hf_kwargs)
    return out.numpy(), None

  def hf_assisted(row):
    with torch.inference_mode():
      out = hf_target.generate(**hf_inputs(row), assistant_model=hf_draft, **hf_kwargs)
    return out.numpy(), None

  def specdec_greedy(row):
    out = jax.block_until_ready(
        specdec.generate(pair.target, row, max_decode_len=max_len, eos_id=eos_id))
    return np.asarray(out.tokens), None

  def specdec_spec_with(draft):
    def run_speculative(row):
      out = jax.block_until_ready(specdec.speculative_generate(
          pair.target, draft, row, gamma=gamma, max_decode_len=max_len, eos_id=eos_id))
      return np.asarray(out.tokens), out.stats.summary()
    return run_speculative

  fns = dict(hf_greedy=hf_greedy, hf_assisted=hf_assisted, specdec_greedy=specdec_greedy,
             specdec_spec=specdec_spec_with(t5_draft),
             specdec_shared=specdec_spec_with(pair.draft))

  def run(method, row):
    before = dict(calls)
    start = time.perf_counter()
    out, stats = fns[method](row)
    elapsed = time.perf_counter() - start
    if method.startswith("hf"):
      if not (out[:, 0] == 0).all():
        raise RuntimeError(f"{method}: transformers output does not start with token 0")
      out = out[:, 1:]  # HF returns the decoder start token; specdec (T5X) does not.
      stats = {"target_calls": calls["target"] - before["target"],
               "draft_calls": calls["draft"] - before["draft"]}
    out = trim(out[0], eos_id=eos_id, length=max_len)
    if method == "specdec_greedy":  # One target pass per token, EOS included.
      stats = {"target_calls": len(out), "draft_calls": 0}
    elif method in ("specdec_spec", "specdec_shared"):
      stats = {"target_calls": int(stats["target_calls"]), "draft_calls": int(stats["draft_calls"])}
    return out, elapsed, stats

  print(f"warming up (compiling) on {len(cpus)} CPU core(s) {cpus} ...", flush=True)
  warmup = {}
  for method in methods:
    start = time.perf_counter()
    run(method, tokens[:1])
    warmup[method] = time.perf_counter() - start

  per_prompt = []
  for i, src in enumerate(sources):
    row = tokens[i:i + 1]
    times = {m: [] for m in methods}
    outputs, stats = {}, {}
    for _ in range(_REPEATS.value):
      for method in methods:  # Interleaved, so slow drifts of the machine hit all alike.
        out, elapsed, st = run(method, row)
        times[method].append(elapsed)
        if method in outputs and out != outputs[method]:
          raise RuntimeError(f"{method} is not deterministic on sentence {i}")
        outputs[method], stats[method] = out, st
    equal = all(outputs[m] == outputs["hf_greedy"] for m in methods)
    per_prompt.append(dict(
        source=src, output=pair.decode(np.array([outputs["specdec_greedy"]]))[0],
        tokens={m: len(outputs[m]) for m in methods},
        median_s={m: float(np.median(times[m])) for m in methods},
        times_s={m: [float(t) for t in times[m]] for m in methods},
        calls=stats, equal=equal,
        outputs=None if equal else {m: outputs[m] for m in methods}))
    print(f"[{i + 1}/{len(sources)}] {'==' if equal else '!='} "
          + "  ".join(f"{m} {1e3 * np.median(times[m]):.0f}ms" for m in methods), flush=True)

  summary = {}
  for m in methods:
    total_s = sum(p["median_s"][m] for p in per_prompt)
    total_tokens = sum(p["tokens"][m] for p in per_prompt)
    target_calls = [p["calls"][m]["target_calls"] for p in per_prompt]
    summary[m] = dict(
        total_s=total_s, tokens=total_tokens, ms_per_token=1e3 * total_s / total_tokens,
        median_ms_per_token=float(np.median(
            [1e3 * p["median_s"][m] / p["tokens"][m] for p in per_prompt])),
        target_calls=int(sum(target_calls)),
        draft_calls=int(sum(p["calls"][m]["draft_calls"] for p in per_prompt)),
        warmup_s=warmup[m])
  for m in methods:
    s = summary[m]
    s["speedup_vs_own_greedy"] = summary[BASELINE[m]]["ms_per_token"] / s["ms_per_token"]
    s["speedup_vs_hf_greedy"] = summary["hf_greedy"]["ms_per_token"] / s["ms_per_token"]
    s["tokens_per_target_call"] = s["tokens"] / s["target_calls"]
  identical = all(p["equal"] for p in per_prompt)

  report = dict(
      pair=pair.name, gamma=gamma, max_decode_len=max_len, input_len=_INPUT_LEN.value,
      num_sentences=len(sources), repeats=_REPEATS.value, fixed_length=_FIXED.value,
      batch_size=1, identical_outputs=identical,
      machine=dict(platform=platform.platform(), processor=platform.processor(),
                   cpus_pinned=cpus, cpu_count=os.cpu_count(),
                   torch_threads=torch.get_num_threads(),
                   omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
                   load_average_at_start=load_at_start, load_average_at_end=os.getloadavg(),
                   jax_devices=[str(d) for d in jax.devices()]),
      versions=dict(transformers=transformers.__version__, torch=torch.__version__,
                    jax=jax.__version__, specdec=specdec.__version__),
      date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), command=" ".join(sys.argv),
      target_params=pair.target.num_params, draft_params=t5_draft.num_params,
      shared_draft_params=None if t5_draft is pair.draft else pair.draft.num_params,
      summary=summary, per_prompt=per_prompt)
  out_dir = os.path.dirname(_OUTPUT.value)
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
  with open(_OUTPUT.value, "w") as f:
    json.dump(report, f, indent=2)

  print()
  print(markdown_table(report))
  print(f"\ngreedy outputs identical across all {len(methods)} methods: {identical}")
  print(f"wrote {_OUTPUT.value}")
  if not identical:
    bad = [i for i, p in enumerate(per_prompt) if not p["equal"]]
    raise SystemExit(f"greedy outputs differ on sentences {bad} (see {_OUTPUT.value})")


def markdown_table(report) -> str:
  gamma = report["gamma"]
  names = {"hf_greedy": "transformers greedy",
           "hf_assisted": f"transformers assisted (K={gamma})",
           "specdec_greedy": "specdec generate",
           "specdec_spec": f"specdec speculative (γ={gamma})",
           "specdec_shared": f"specdec speculative, shared-encoder draft (γ={gamma})"}
  lines = [
      f"{report['pair']}: {report['num_sentences']} test sentences, batch 1, max_decode_len "
      f"{report['max_decode_len']}{' (fixed length)' if report['fixed_length'] else ''}, "
      f"median of {report['repeats']}, {len(report['machine']['cpus_pinned'])} CPU core(s), "
      f"transformers {report['versions']['transformers']}, torch {report['versions']['torch']}, "
      f"jax {report['versions']['jax']}",
      "",
      "| method | ms/token | speedup vs own greedy | speedup vs transformers greedy "
      "| tokens | target calls | tokens/target call |",
      "|---|---:|---:|---:|---:|---:|---:|"]
  for m in report["summary"]:
    s = report["summary"][m]
    lines.append(f"| {names[m]} | {s['ms_per_token']:.2f} | {s['speedup_vs_own_greedy']:.2f}x | "
                 f"{s['speedup_vs_hf_greedy']:.2f}x | {s['tokens']} | {s['target_calls']} | "
                 f"{s['tokens_per_target_call']:.2f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(main)
