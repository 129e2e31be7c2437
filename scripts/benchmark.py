r"""The paper's Tables 2–3 on the shipped pairs: α, c, v(γ), predicted and MEASURED speedups.

    python scripts/benchmark.py --quick          # configs/benchmarks/quick.gin, a few minutes
    python scripts/benchmark.py                  # configs/benchmarks/full.gin (γ 1..8, batch 1, 8)
    python scripts/benchmark.py --gin_file=configs/benchmarks/full.gin \
        --gin.benchmark.gammas="[2, 4]" --gin.benchmark.batch_sizes="[1]" --output_dir=/tmp/b
    python scripts/benchmark.py --quick --profile   # + a jax profiler trace of one setting
    python scripts/benchmark.py --gin_file=configs/benchmarks/verification.gin  # block, adaptive

For every shipped pair's task × temperature × draft × γ × variant × batch (a variant: the
verification rule, adaptive γ's threshold, the lenience; `benchmark.variants`, a list of dicts
with keys verification, threshold, lenience, gammas): α, tokens per target call, the
measured c and v(γ) (`specdec.timing`), the cost model's predicted speedup (paper form, v = 1;
and v-aware) and the speedup measured over `specdec.generate` on the same prompts in this
process (see `specdec.benchmarking`). Writes to --output_dir (default runs/benchmark or
runs/benchmark_quick, which git ignores; the committed results/ copies are written only when
asked, e.g. --output_dir=results/benchmark_quick): benchmark.json (every row and the machine),
benchmark.md (tables shaped like the paper's, best γ per setting, where the time goes) and
speedup_<task>_b<batch>.png. Prints the machine and the load average before and after beside the
results: the ratios depend on both. Compile time is excluded from every timing; JAX's persistent
compilation cache (--compilation_cache_dir) makes reruns cheap.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # noqa: E402
import gin  # noqa: E402
import jax  # noqa: E402

from specdec import benchmarking, data, gin_utils, pretrained, timing  # noqa: E402
from specdec.loading import load_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_task(pair_name: str, *, drafts, num_sentences: int, split: str, input_length: int,
              train_sentences: int) -> benchmarking.TaskSetup:
  """The shipped pair's target and drafts, and `num_sentences` prompts of its `split`."""
  pair = pretrained.load(pair_name)
  sources = [src for src, _ in data.read_pairs(pair.task, split)][:num_sentences]
  if len(sources) < num_sentences:
    raise ValueError(f"num_sentences: {pair.task}/{split} has only {len(sources)} examples")
  prompts = benchmarking.pad_prompts(pair.encode(sources, max_length=input_length),
                                     input_length)
  train = None
  if any(k in ("bigram", "unigram") for k in drafts):
    targets = [tgt for _, tgt in data.read_pairs(pair.task, "train")[:train_sentences]]
    train = [list(pair.vocabulary.encode(t)) + [data.EOS_ID] for t in targets]
  built, notes = benchmarking.build_drafts(drafts, vocab_size=pair.target.vocab_size,
                                           models=pair_drafts(pair), train_targets=train)
  if train is not None:
    notes.append(f"{pair.task}: bigram/unigram drafts fitted on the first {len(train)} "
                 "training targets")
  notes.append(f"{pair.task}: target {pair.target.num_params / 1e6:.2f}M params; "
               + ", ".join(f"{benchmarking.DRAFT_LABELS[k]} {m.num_params / 1e6:.2f}M"
                           for k, m in pair_drafts(pair).items() if m is not None))
  return benchmarking.TaskSetup(name=pair.task, target=pair.target, drafts=built,
                                prompts=prompts, notes=notes)


def pair_drafts(pair) -> dict:
  """The pair's model drafts by benchmark kind: the shared-encoder draft, the small T5 distilled
  from the target (its own encoder) and the plain one (labels only)."""
  from specdec.shared_encoder import SharedEncoderDraft  # pylint: disable=g-import-not-at-top
  shared = pair.draft if isinstance(pair.draft, SharedEncoderDraft) else None
  small = pair.draft_small if shared is not None else pair.draft
  return {"t5_shared_encoder": shared, "t5_distilled": small, "t5_plain": pair.draft_plain}


def _git_commit() -> str | None:
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


@gin.configurable
def benchmark(*, output_dir: str, pairs=None, drafts=benchmarking.DRAFT_KINDS,
              temperatures=(0.0, 1.0), gammas=tuple(range(1, 9)), batch_sizes=(1, 8),
              num_sentences: int = 32, split: str = "test", input_length: int = 64,
              max_decode_len: int = 64, repeats: int = 3, timing_repeats: int = 30,
              train_sentences: int = 20000, seed: int = 0, variants=None, profile: bool = False,
              profile_draft: str = "t5_distilled", profile_gamma: int = 3,
              extra_drafts=None) -> dict:
  """Runs the benchmark for every pair in `pairs` (None: all shipped) and writes the results.

  extra_drafts: {name: directory} of drafts of your own (`T5Model` or `SharedEncoderDraft`
  directories, loaded with `specdec.load_model`), benchmarked as rows of their own beside
  `drafts` (which may be [] to benchmark only these).

  variants: None (the paper's token rule at fixed γ) or dicts, e.g. [{}, {'verification':
  'block'}, {'threshold': 0.5, 'gammas': [4]}, {'lenience': 0.5, 'gammas': [3]}]
  (`benchmarking.parse_variants`; at T = 0 block runs as token and lenience rows are skipped).
  """
  started = time.perf_counter()
  parsed_variants = benchmarking.parse_variants(variants)
  pairs = list(pairs) if pairs is not None else pretrained.names()
  if not pairs:
    raise ValueError("pairs: no shipped pair found (specdec/assets/checkpoints, or "
                     "SPECDEC_CHECKPOINT_DIR)")
  config = dict(pairs=pairs, drafts=list(drafts), extra_drafts=dict(extra_drafts or {}),
                temperatures=list(temperatures),
                gammas=list(gammas), batch_sizes=list(batch_sizes), num_sentences=num_sentences,
                split=split, input_length=input_length, max_decode_len=max_decode_len,
                repeats=repeats, timing_repeats=timing_repeats,
                train_sentences=train_sentences, seed=seed,
                variants=[dataclasses.asdict(v) for v in parsed_variants])
  load_before = os.getloadavg()
  print(f"load average before: {load_before[0]:.2f} (1 min) on {os.cpu_count()} cores")
  rows, costs, notes, compiles, compile_s, profile_dir = [], {}, [], 0, 0.0, None
  profiled = None
  if any(t == 0 for t in temperatures) and any(
      v.verification != "token" or v.lenience != 1.0 for v in parsed_variants):
    notes.append("T=0: every rule is the greedy one there, so block-verification settings run "
                 "as (and are listed once with) the token rule's, and lenience settings are "
                 "skipped (lenience needs T > 0)")
  for name in pairs:
    setup = load_task(name, drafts=drafts, num_sentences=num_sentences, split=split,
                      input_length=input_length, train_sentences=train_sentences)
    for draft_name, path in dict(extra_drafts or {}).items():
      if draft_name in setup.drafts:
        raise ValueError(f"extra_drafts: {draft_name!r} is already a draft of the benchmark")
      setup.drafts[draft_name] = load_model(path)
      setup.notes.append(f"draft {draft_name}: {path} "
                         f"({setup.drafts[draft_name].num_params / 1e6:.2f}M params)")
    notes += setup.notes
    for n in setup.notes:
      print("note:", n)
    out = benchmarking.run_task(setup, temperatures=temperatures, gammas=gammas,
                                batch_sizes=batch_sizes, max_decode_len=max_decode_len,
                                repeats=repeats, timing_repeats=timing_repeats, seed=seed,
                                variants=parsed_variants)
    rows += out["rows"]
    costs[setup.name] = out["costs"]
    compiles += out["compiles"]
    compile_s += out["compile_s"]
    if profile and profile_dir is None:
      if profile_draft not in setup.drafts:
        raise ValueError(f"profile_draft {profile_draft!r} not among {list(setup.drafts)}")
      profile_dir = benchmarking.profile_setting(
          setup.target, setup.drafts[profile_draft], setup.prompts[:1], gamma=profile_gamma,
          temperature=0.0, max_decode_len=max_decode_len,
          out_dir=os.path.join(output_dir, "profile"), seed=seed)
      profiled = f"{setup.name}, {profile_draft}, γ={profile_gamma}, batch 1, T=0 (3 decodes)"
      print(f"profile of {profiled}: {profile_dir}")
  metadata = benchmarking.machine_metadata(load_before)
  metadata.update(
      command=" ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
      git_commit=_git_commit(), gin_config=gin.config_str(), compiles=compiles,
      compile_s=compile_s, runtime_s=time.perf_counter() - started)
  result = benchmarking.assemble(rows=rows, costs=costs, config=config, notes=notes,
                                 metadata=metadata, profile=profile_dir,
                                 profile_setting=profiled)
  paths = benchmarking.write_outputs(result, output_dir)
  print(f"\n{len(rows)} rows, {compiles} compiles ({compile_s:.0f} s), "
        f"{time.perf_counter() - started:.0f} s in all; wrote "
        f"{', '.join(os.path.relpath(p) for p in paths)}")
  print(timing.machine_line(metadata))
  return result


def define_flags() -> None:
  """The script's flags (defined only when run as a script, so tests can import `benchmark`)."""
  flags.DEFINE_bool("quick", False, "Use configs/benchmarks/quick.gin when no --gin_file is "
                    "given (default: full.gin).")
  flags.DEFINE_string("output_dir", None, "Where to write results (default runs/benchmark, or "
                      "runs/benchmark_quick with --quick: git ignores runs/; pass "
                      "--output_dir=results/... to update the committed results).")
  flags.DEFINE_string("compilation_cache_dir",
                      os.path.expanduser("~/.cache/specdec/jax_compilation_cache"),
                      "JAX persistent compilation cache ('' disables it).")
  flags.DEFINE_bool("profile", False, "Also capture a jax profiler trace of one setting "
                    "(--profile_draft, --profile_gamma, batch 1, T=0) under output_dir/profile.")
  flags.DEFINE_string("profile_draft", "t5_distilled", "Draft to profile.")
  flags.DEFINE_integer("profile_gamma", 3, "γ to profile.")


def default_output_dir(*, quick: bool) -> str:
  """runs/benchmark[_quick] under the repository: git ignores runs/, so a default run never
  overwrites the committed results/."""
  return os.path.join(REPO, "runs", "benchmark_quick" if quick else "benchmark")


def _enable_compilation_cache(path: str) -> None:
  if path:
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if not gin_utils.GIN_FILES.value:  # No --gin_file: the full or quick configuration.
    default = os.path.join("configs", "benchmarks", "quick.gin" if FLAGS.quick else "full.gin")
    gin.clear_config()
    gin_utils.parse([default], gin_utils.GIN_BINDINGS.value)
  _enable_compilation_cache(FLAGS.compilation_cache_dir)
  output_dir = FLAGS.output_dir or default_output_dir(quick=FLAGS.quick)
  kwargs = dict(output_dir=output_dir)
  if FLAGS.profile:
    kwargs.update(profile=True, profile_draft=FLAGS.profile_draft,
                  profile_gamma=FLAGS.profile_gamma)
  benchmark(**kwargs)


if __name__ == "__main__":
  define_flags()
  gin_utils.run(main)
