#!/usr/bin/env python
"""Trains a specdec T5 target or draft, configured with gin as T5X runs are.

  python scripts/train.py --gin_file=configs/models/ende_target.gin \
      --gin_file=configs/runs/train.gin --gin.TRAIN_STEPS=1000 --gin.MODEL_DIR="'/work/runs/x'"

Distillation of a draft from a saved target (`T5Model.save` directory):

  python scripts/train.py --gin_file=configs/models/ende_draft.gin \
      --gin_file=configs/runs/distill.gin --gin.TEACHER_DIR="'/path/to/target'" ...

Distillation on the target's own outputs (DistillSpec's teacher-generated data; the file from
`scripts/make_distill_data.py`) instead of the labels: add
`--gin.train.distill_targets="'/path/to/outputs.npz'"`.

Macros (as in T5X): MODEL_DIR, TRAIN_STEPS, BATCH_SIZE, TASK, LEARNING_RATE, TEACHER_DIR, ...
(see configs/runs/*.gin). Any parameter of `train` can be bound with `--gin.train.NAME=VALUE`.
Runs are resumable: the latest orbax checkpoint in MODEL_DIR/checkpoints is restored, and the data
order and dropout keys are functions of (seed, step). TensorBoard metrics go to MODEL_DIR/tb.
It runs on JAX's default backend (a GPU or TPU when one is there; `JAX_PLATFORMS=cpu` forces
the CPU) and logs the devices it uses.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gin  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def t5_config(**kwargs):
  """gin entry point for `specdec.T5Config` (bound as `T5Config.<field> = ...`)."""
  from specdec.config import T5Config  # pylint: disable=g-import-not-at-top
  return T5Config(**kwargs)


gin.external_configurable(t5_config, name="T5Config")


def shared_encoder_config(**kwargs):
  """gin entry point for `specdec.SharedEncoderConfig` (a draft over the teacher's encoder)."""
  from specdec.shared_encoder import SharedEncoderConfig  # pylint: disable=g-import-not-at-top
  return SharedEncoderConfig(**kwargs)


gin.external_configurable(shared_encoder_config, name="SharedEncoderConfig")


class _Student:
  """What `train` does differently for a T5 student and for a shared-encoder draft (one that
  reads the teacher's encoder output): initial parameters, the model to evaluate and save."""

  def __init__(self, model_config, teacher):
    from specdec.shared_encoder import SharedEncoderConfig  # pylint: disable=g-import-not-at-top
    self.config = model_config
    self.teacher = teacher
    self.shared = isinstance(model_config, SharedEncoderConfig)
    if self.shared and teacher is None:
      raise ValueError("a SharedEncoderConfig model reads its teacher's encoder: set teacher_dir")

  @property
  def teacher_params(self):
    return self.teacher.params if self.shared else None

  def init_params(self, seed: int, init_target_layers, init_decoder_from=None):
    from specdec.model import T5Model  # pylint: disable=g-import-not-at-top
    from specdec.shared_encoder import SharedEncoderDraft  # pylint: disable=g-import-not-at-top
    if not self.shared:
      if init_target_layers is not None or init_decoder_from is not None:
        raise ValueError("init_target_layers and init_decoder_from are for SharedEncoderConfig "
                         "models")
      return T5Model.init(self.config, seed).params
    layers = None if init_target_layers in (None, "auto") else tuple(init_target_layers)
    if init_target_layers == ():
      if init_decoder_from is not None:
        raise ValueError("init_decoder_from: init_target_layers=() asks for a random start")
      return SharedEncoderDraft.init(self.config, seed).params
    source = None if init_decoder_from is None else T5Model.load(init_decoder_from)
    return SharedEncoderDraft.from_target(self.teacher, self.config, layers=layers,
                                          decoder_source=source, rng=seed).params

  def model(self, params):
    """The model to save (a `T5Model` or a `SharedEncoderDraft`)."""
    from specdec.model import T5Model  # pylint: disable=g-import-not-at-top
    from specdec.shared_encoder import (  # pylint: disable=g-import-not-at-top
        SharedEncoderDraft, encoder_fingerprint)
    if self.shared:
      return SharedEncoderDraft(config=self.config, params=params,
                                target_fingerprint=encoder_fingerprint(self.teacher))
    return T5Model(self.config, params)

  def standalone(self, params):
    """The model as a plain decoder (a shared-encoder draft bound to its teacher)."""
    model = self.model(params)
    return model.bind(self.teacher) if self.shared else model


def _deadline(stop_time: str | float | None, now: datetime.datetime | None = None
              ) -> float | None:
  """'HH:MM' (UTC, its next occurrence) or a POSIX timestamp → POSIX timestamp.

  'HH:MM' already past today means tomorrow: a run started at 23:50 with '01:30' stops at
  01:30 the next day, not at once.
  """
  if stop_time is None:
    return None
  if isinstance(stop_time, (int, float)):
    return float(stop_time)
  try:
    hh, mm = (int(x) for x in str(stop_time).split(":"))
    if not (0 <= hh < 24 and 0 <= mm < 60):
      raise ValueError
  except ValueError as e:
    raise ValueError(f"stop_time must be 'HH:MM' (UTC) or a timestamp, got {stop_time!r}") from e
  now = now or datetime.datetime.now(datetime.timezone.utc)
  deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
  if deadline <= now:
    deadline += datetime.timedelta(days=1)
  return deadline.timestamp()


def _load_distill_targets(path: str, *, teacher_dir: str, task: str, max_length: int, log):
  """(inputs, teacher outputs) from a `specdec.distill_data` file, checked against the run."""
  from specdec import distill_data  # pylint: disable=g-import-not-at-top
  inputs, targets, meta = distill_data.load(path)
  if meta.get("task", task) != task:
    raise ValueError(f"{path} holds outputs for task {meta['task']!r}, not {task!r}")
  made_by = meta.get("teacher")
  if made_by and os.path.abspath(made_by) != os.path.abspath(teacher_dir):
    log(f"warning: {path} was decoded by {made_by}, distilling from {teacher_dir}")
  keep = [i for i in range(len(inputs))
          if len(inputs[i]) <= max_length and len(targets[i]) <= max_length]
  log(f"distillation targets: {len(keep)} of {len(inputs)} teacher outputs from {path} "
      f"(temperature {meta.get('temperature')})")
  if not keep:
    raise ValueError(f"{path}: no pair fits max_length={max_length}")
  return [inputs[i] for i in keep], [targets[i] for i in keep]


@gin.configurable(denylist=["log"])
def train(*, model_config, model_dir: str = gin.REQUIRED, train_steps: int = gin.REQUIRED,
          task: str = "specdec_ende", batch_size: int = 64, optimizer: str = "adamw",
          schedule: str = "cosine", learning_rate: float = 1e-3, warmup_steps: int = 500,
          weight_decay: float = 0.01, z_loss: float = 1e-4, seed: int = 0, max_length: int = 64,
          checkpoint_every: int = 500, keep_checkpoints: int = 2, log_every: int = 50,
          eval_every: int = 0, eval_examples: int = 256, eval_batch_size: int = 64,
          teacher_dir: str | None = None, distill_ce_weight: float = 0.0,
          distill_temperature: float = 1.0, export_dir: str | None = None,
          stop_time: str | None = None, init_from: str | None = None,
          distill_targets: str | None = None, buckets: tuple = (16, 32, 64),
          distill_loss: str = "forward_kl", objective: str = "auto", init_target_layers=None,
          init_decoder_from: str | None = None,
          alpha_examples: int = 0, alpha_gamma: int = 4, time_budget_s: float | None = None,
          decay_fraction: float = 0.2, log=print) -> dict:
  """Trains (or distils, when `teacher_dir` is set) and returns a summary dict.

  `buckets`: the padded lengths of the training batches; each is one compile of the train step
  (on a GPU, where a step is cheap and a compile is not, `(max_length,)` is one compile).

  `init_from`: a `T5Model.save` directory whose parameters start a new run (a warm start with a
  fresh optimizer and schedule); its config must equal `model_config` up to dropout and dtype
  (e.g. a `scripts/grow_model.py` output, or a shipped float32 target trained on in bfloat16). Ignored once
  MODEL_DIR holds a checkpoint (resuming wins).

  `distill_targets`: a `specdec.distill_data` file of (train input, teacher output) pairs, used
  instead of the task's train pairs; needs `teacher_dir` (the loss is the KL to the teacher's
  logits along its own outputs); a file decoded by another teacher is logged as a warning.

  `model_config` may be a `SharedEncoderConfig`: a draft decoder over the teacher's frozen
  encoder (needs `teacher_dir`). `init_target_layers` then picks the teacher decoder layers it
  starts from (None: its first layers where the widths agree; `()`: random).
  `init_decoder_from`: a `T5Model.save` directory (e.g. a small T5 draft of the draft's width)
  whose decoder the shared-encoder draft starts from instead of the teacher's, leaf by leaf where
  shapes agree (`SharedEncoderDraft.from_target(decoder_source=...)`); `init_target_layers` then
  names that model's decoder layers.
  `distill_loss`: 'forward_kl' or 'tvd' (see `specdec.training.DISTILL_LOSSES`).
  `objective`: 'distill' (the teacher's distributions), 'labels' (cross-entropy; a
  shared-encoder draft still reads the teacher's encoder), or 'auto': distil when `teacher_dir`
  is set.
  `alpha_examples` > 0: at the end, α of the model as a draft for the teacher on that many
  validation inputs (γ = `alpha_gamma`, T = 0 and T = 1), in the summary.

  `schedule='wsd'`: warmup, constant, then a linear decay over the last `decay_fraction` of the
  run (`training.BudgetSchedule`). With `time_budget_s` the run's length is set by the clock:
  seconds of training after the first (compiling) step, `train_steps` the most it may take; the
  decay starts when (1 − decay_fraction) of the budget has passed and is sized by the measured
  step rate, so the run ends annealed inside the budget (for short accelerator leases).
  """
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from specdec import data, training  # pylint: disable=g-import-not-at-top
  from specdec.model import T5Model  # pylint: disable=g-import-not-at-top

  training.task_prefix(task)  # ValueError listing the known tasks.
  if train_steps <= 0:
    raise ValueError(f"train_steps must be positive, got {train_steps}")
  buckets = tuple(sorted(int(b) for b in buckets))
  if not buckets or buckets[0] <= 0 or buckets[-1] < max_length:
    raise ValueError(f"buckets must be positive lengths, the largest >= max_length={max_length}; "
                     f"got {buckets}")
  if distill_targets and not teacher_dir:
    raise ValueError("distill_targets needs teacher_dir (the teacher whose outputs they are)")
  deadline = _deadline(stop_time)
  model_dir = os.path.abspath(model_dir)
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "config.gin"), "w") as f:
    f.write(gin.config_str())

  t0 = time.time()
  sp = training.tokenizer()
  if distill_targets:
    inputs, targets = _load_distill_targets(distill_targets, teacher_dir=teacher_dir,
                                            task=task, max_length=max_length, log=log)
    source = "teacher-output"
  else:
    pairs = data.read_pairs(task, "train")
    inputs, targets = training.tokenize_pairs(pairs, task=task, max_length=max_length, sp=sp)
    source = f"of {len(pairs)}"
  batches = training.Batches(inputs, targets, batch_size=batch_size, seed=seed,
                             buckets=buckets)
  valid = data.read_pairs(task, "validation")[:eval_examples]
  valid_inputs, valid_targets = training.tokenize_pairs(valid, task=task, max_length=max_length,
                                                        drop_long=False, sp=sp)
  log(f"{task}: {len(inputs)} {source} train pairs fit {max_length} tokens; "
      f"{batches.batches_per_epoch} batches of {batch_size} per epoch "
      f"(tokenised in {time.time() - t0:.1f}s)")

  teacher = None
  if teacher_dir:
    teacher = T5Model.load(teacher_dir)
    log(f"distilling from {teacher_dir} ({teacher.num_params:,} params) into a "
        f"{model_config.num_params:,}-param draft; CE weight {distill_ce_weight}")
  budget = None
  if schedule == "wsd":
    budget = training.BudgetSchedule(learning_rate=learning_rate, warmup_steps=warmup_steps,
                                     max_steps=train_steps, budget_s=time_budget_s,
                                     decay_fraction=decay_fraction)
    sched = None  # The learning rate is set before every step (no recompile when it is sized).
  elif time_budget_s is not None:
    raise ValueError("time_budget_s needs schedule='wsd' (the only schedule sized while it runs)")
  else:
    sched = training.make_schedule(schedule=schedule, learning_rate=learning_rate,
                                   warmup_steps=warmup_steps, total_steps=train_steps)
  tx = training.make_optimizer(optimizer=optimizer, schedule=sched, weight_decay=weight_decay)
  student = _Student(model_config, teacher)
  if objective not in ("auto", "distill", "labels"):
    raise ValueError(f"objective must be 'auto', 'distill' or 'labels', got {objective!r}")
  if objective == "distill" and teacher is None:
    raise ValueError("objective='distill' needs teacher_dir")
  distilling = teacher is not None and objective != "labels"
  trainer = training.Trainer(model_config, tx, schedule=sched, z_loss=z_loss, dropout_seed=seed,
                             teacher_config=teacher.config if teacher else None,
                             distill_temperature=distill_temperature,
                             distill_ce_weight=distill_ce_weight, distill_loss=distill_loss)
  ckpts = training.Checkpoints(os.path.join(model_dir, "checkpoints"),
                               max_to_keep=keep_checkpoints)
  params = student.init_params(seed, init_target_layers, init_decoder_from)
  if init_from and ckpts.latest_step() is None:
    params = _warm_start_params(init_from, model_config)
    log(f"initialised from {init_from} (fresh optimizer state)")
  state = trainer.init_state(params)
  if ckpts.latest_step() is not None:
    state = ckpts.restore(trainer.abstract_state(params))
    log(f"resumed from step {int(state.step)} in {ckpts.directory}")
  log(f"model: {student.model(state.params).num_params:,} params; config {model_config}")
  log(f"devices: {jax.devices()}")

  writer = SummaryWriter(os.path.join(model_dir, "tb"))
  start_step = int(state.step)
  pending, last = [], {}
  summary_path = os.path.join(model_dir, "summary.json")
  history = json.load(open(summary_path)).get("segments", []) if os.path.exists(summary_path) else []

  def run_eval(step):
    t = time.time()
    cross_entropy = training.cross_entropy_per_token(
        trainer, state.params, valid_inputs, valid_targets, batch_size=eval_batch_size,
        buckets=buckets, teacher_params=student.teacher_params)
    bleu, preds = training.evaluate_bleu(student.standalone(state.params), valid, task=task,
                                         batch_size=eval_batch_size, sp=sp)
    writer.add_scalar("eval/bleu", bleu, step)
    writer.add_scalar("eval/cross_entropy", cross_entropy, step)
    log(f"step {step}: validation BLEU {bleu:.2f}, cross-entropy {cross_entropy:.3f} nats/token "
        f"on {len(valid)} pairs ({time.time() - t:.0f}s); e.g. {valid[0][0]!r} -> {preds[0]!r}")
    return bleu, cross_entropy

  seg_start = time.time()
  summary_extra = {}
  bar = tqdm.tqdm(total=train_steps, initial=start_step, dynamic_ncols=True, mininterval=10,
                  file=sys.stderr)
  step = start_step
  stopped_early = False
  clock = None  # Starts when the first (compiling) step has finished: what time_budget_s counts.
  clock_step = start_step
  while step < train_steps and not (budget is not None and budget.done(step)):
    batch = batches.batch(step)
    if budget is not None:
      state = training.set_learning_rate(state, budget(step))
    if distilling:
      state, metrics = trainer.distill_step(state, teacher.params, batch)
    else:
      state, metrics = trainer.train_step(state, batch, student.teacher_params)
    step += 1
    pending.append(metrics)
    bar.update(1)
    if clock is None:
      jax.block_until_ready(metrics)
      clock, clock_step = time.time(), step
    if step % log_every == 0 or step == train_steps:
      fetched = jax.device_get(pending)
      pending = []
      if budget is not None and budget.budget_s is not None:
        budget.observe(step, time.time() - clock, steps_timed=step - clock_step)
        if budget.decay_start is not None and "decay_logged" not in summary_extra:
          summary_extra["decay_logged"] = True
          log(f"step {step}: decay over {budget.decay_steps} steps (budget {budget.budget_s}s)")
      last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
      for k, v in last.items():
        writer.add_scalar(f"train/{k}", v, step)
      bar.set_postfix(loss=f"{last['loss']:.3f}", **({"kl": f"{last['kl']:.3f}"}
                                                      if "kl" in last else {}))
      tqdm.tqdm.write(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in last.items())
                      + f" elapsed={time.time() - seg_start:.0f}s", file=sys.stderr)
    if step % checkpoint_every == 0:
      ckpts.save(state)
    if eval_every and step % eval_every == 0 and step < train_steps:
      run_eval(step)
    if deadline is not None and time.time() >= deadline and step < train_steps:
      log(f"stop_time {stop_time} reached at step {step}; checkpointing and stopping")
      stopped_early = True
      break
  bar.close()
  ckpts.save(state)
  ckpts.close()
  wall = time.time() - seg_start
  history.append({"start_step": start_step, "end_step": step, "wall_s": round(wall, 1)})
  if budget is not None:  # What the run decided (fix these to reproduce it).
    summary_extra = {"schedule": "wsd", "time_budget_s": time_budget_s,
                     "decay_start": budget.decay_start, "decay_steps": budget.decay_steps}
  summary = {**summary_extra, "steps": step, "train_steps": train_steps,
             "stopped_early": stopped_early,
             "segments": history, "wall_s_total": round(sum(h["wall_s"] for h in history), 1),
             "final_train_metrics": last, "num_params": student.model(state.params).num_params}
  if eval_examples and step > start_step:
    summary["validation_bleu"], summary["validation_cross_entropy"] = run_eval(step)
    summary["validation_examples"] = len(valid)
  if alpha_examples and teacher is not None:
    summary["alpha"] = _alpha(teacher, student.model(state.params), valid_inputs[:alpha_examples],
                              gamma=alpha_gamma, batch_size=eval_batch_size, buckets=buckets)
    log(f"alpha on {min(alpha_examples, len(valid_inputs))} validation inputs (gamma "
        f"{alpha_gamma}): {summary['alpha']}")
  if export_dir:
    student.model(state.params).save(export_dir)
    log(f"saved the model to {export_dir}")
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  writer.close()
  log(f"done: step {step}, {wall:.0f}s this run; summary in {summary_path}")
  return summary


def _alpha(teacher, draft, inputs, *, gamma: int, batch_size: int, buckets) -> dict:
  """α of `draft` for `teacher` at T = 0 and T = 1 (seed 0) over tokenised inputs."""
  from specdec import training  # pylint: disable=g-import-not-at-top
  batches = training.encoder_batches(inputs, batch_size=batch_size, buckets=buckets)
  return {f"T={t:g}": round(training.acceptance_rate(teacher, draft, batches, t, gamma=gamma), 4)
          for t in (0.0, 1.0)}


def _warm_start_params(path: str, model_config):
  """Parameters of the model directory `path`; ValueError if its config differs (dropout and
  the activation dtype aside: parameters are float32 whatever either computes in)."""
  from specdec.loading import load_model  # pylint: disable=g-import-not-at-top
  saved = load_model(path)
  mine = model_config.replace(dropout_rate=0.0, dtype="float32")
  theirs = saved.config.replace(dropout_rate=0.0, dtype="float32")
  if mine != theirs:
    raise ValueError(f"init_from={path}: its config.json differs from the run's model config: "
                     f"{theirs} vs {mine}")
  return saved.params


def parse_args(argv):
  """Splits argv into gin files and bindings (`--gin.KEY=VALUE` as in T5X's gin_utils)."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[], help="gin file (repeatable)")
  parser.add_argument("--gin_bindings", action="append", default=[], help="gin binding")
  parser.add_argument("--gin_search_paths", default=REPO,
                      help="comma-separated directories relative gin files are looked up in")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings)
  for arg in rest:
    if arg.startswith("--gin.") and "=" in arg:
      bindings.append(arg[len("--gin."):])
    else:
      parser.error(f"unrecognised argument {arg!r}")
  return args, bindings


def resolve_gin_files(files, search_paths):
  """Absolute paths of the gin files; ValueError naming any that does not exist."""
  resolved = []
  for name in files:
    candidates = [name] if os.path.isabs(name) else (
        [name] + [os.path.join(p, name) for p in search_paths])
    found = next((c for c in candidates if os.path.isfile(c)), None)
    if found is None:
      raise ValueError(f"gin file not found: {name} (looked in: {', '.join(candidates)})")
    resolved.append(os.path.abspath(found))
  return resolved


def main(argv=None):
  args, bindings = parse_args(sys.argv[1:] if argv is None else argv)
  if not args.gin_file:
    raise ValueError("at least one --gin_file is required (a model and a run config)")
  search = [p for p in args.gin_search_paths.split(",") if p]
  files = resolve_gin_files(args.gin_file, search)
  for p in search:
    gin.add_config_file_search_path(p)
  gin.parse_config_files_and_bindings(files, bindings)
  return train()


if __name__ == "__main__":
  main()
