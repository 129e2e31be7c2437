"""Training a T5 target or draft with optax: T5X's loss, batching, checkpoints, distillation, eval.

Everything here is plain Python/JAX (no gin); `scripts/train.py` wires it to gin as T5X does.

* `TrainState` (step, params, opt_state) and `make_optimizer` (AdamW with warmup + cosine, or
  Adafactor as T5X uses it, with T5X's rsqrt schedule); `BudgetSchedule`, a warmup-stable-decay
  schedule sized to a wall-clock budget while it runs (for short accelerator leases).
* `cross_entropy_with_z_loss`: T5X's `compute_weighted_cross_entropy` (label smoothing 0).
* `Trainer`: jitted train step (with dropout) and DistillSpec-style distillation step (forward
  KL(p_target || q_draft) on the target's teacher-forced logits, optionally mixed with CE).
* `Batches`: tokenised pairs, bucketed to a few lengths, shuffled deterministically from
  (seed, epoch), so the batch of step s is a pure function of (seed, s) and a resumed run sees
  exactly the data an uninterrupted one would.
* `Checkpoints`: an orbax `CheckpointManager` for `TrainState` (resumable).
* `translate`, `evaluate_bleu`, `acceptance_rate`: greedy decoding of a split, BLEU, and α of a
  draft against a target measured with `specdec.speculative_generate`.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Iterable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from specdec import shared_encoder
from specdec.config import T5Config
from specdec.model import T5Model, on_default_device
from specdec.network import transformer
from specdec.shared_encoder import SharedEncoderConfig

Array = jax.Array
Params = Any

PAD_ID = 0
EOS_ID = 1
DEFAULT_BUCKETS = (16, 32, 64)


# --------------------------------------------------------------------------------------------
# State and optimizer.


@flax.struct.dataclass
class TrainState:
  """step: int32 `[]`; params: T5X's parameter tree (float32); opt_state: the optax state."""
  step: Array
  params: Params
  opt_state: Any


def make_schedule(*, schedule: str, learning_rate: float, warmup_steps: int,
                  total_steps: int) -> optax.Schedule:
  """Learning rate as a function of the step.

  'cosine': linear warmup to `learning_rate`, then cosine decay to 10% of it at `total_steps`.
  'rsqrt': T5X's rsqrt decay: linear warmup to `learning_rate`, then
    `learning_rate * sqrt(warmup_steps / step)` (T5X's `constant * rsqrt_decay`).
  'constant': linear warmup, then constant.
  """
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}")
  if warmup_steps < 0:
    raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
  warmup = max(int(warmup_steps), 1)

  def warm(step):
    return learning_rate * jnp.minimum(1.0, (step + 1.0) / warmup)

  if schedule == "cosine":
    if total_steps <= 0:
      raise ValueError(f"total_steps must be positive, got {total_steps}")
    decay_steps = max(int(total_steps) - warmup, 1)

    def fn(step):
      step = jnp.asarray(step, jnp.float32)
      progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
      cosine = 0.1 + 0.9 * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
      return jnp.where(step < warmup, warm(step), learning_rate * cosine)
    return fn
  if schedule == "rsqrt":
    def fn(step):
      step = jnp.asarray(step, jnp.float32)
      return jnp.where(step < warmup, warm(step),
                       learning_rate * jnp.sqrt(warmup / jnp.maximum(step, 1.0)))
    return fn
  if schedule == "constant":
    return lambda step: warm(jnp.asarray(step, jnp.float32))
  raise ValueError(f"unknown schedule {schedule!r}; known: ['cosine', 'rsqrt', 'constant']")


def make_optimizer(*, optimizer: str = "adamw", schedule: optax.Schedule | None,
                   weight_decay: float = 0.01, clip_norm: float = 1.0
                   ) -> optax.GradientTransformation:
  """'adamw' (b2=0.98, decoupled weight decay, global-norm clipping) or 'adafactor' as T5X
  configures it (decay_rate 0.8, factored second moments, update clipping at 1.0, parameter-
  scaled updates, no momentum).

  `schedule=None`: the learning rate is a hyperparameter held in the optimizer state, which the
  caller sets before each step (`set_learning_rate`): a schedule decided while training runs
  (`BudgetSchedule`) then needs no recompile.
  """
  if optimizer not in ("adamw", "adafactor"):
    raise ValueError(f"unknown optimizer {optimizer!r}; known: ['adamw', 'adafactor']")

  def build(learning_rate):
    if optimizer == "adamw":
      tx = optax.adamw(learning_rate, b1=0.9, b2=0.98, eps=1e-8, weight_decay=weight_decay)
      return optax.chain(optax.clip_by_global_norm(clip_norm), tx) if clip_norm else tx
    return optax.adafactor(learning_rate=learning_rate, decay_rate=0.8, clipping_threshold=1.0,
                           multiply_by_parameter_scale=True, momentum=None,
                           weight_decay_rate=None)

  if schedule is None:
    return optax.inject_hyperparams(build)(learning_rate=0.0)
  return build(schedule)


def set_learning_rate(state: "TrainState", learning_rate: float) -> "TrainState":
  """`state` with the learning rate of a `make_optimizer(schedule=None)` optimizer set."""
  hyperparams = dict(state.opt_state.hyperparams)
  hyperparams["learning_rate"] = jnp.asarray(learning_rate, jnp.float32)
  return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))


class BudgetSchedule:
  """Warmup, constant, then a linear decay to `final_fraction` of the peak, sized to a wall-clock
  budget: the "warmup-stable-decay" schedule, whose length need not be known in advance.

  The decay takes the last `decay_fraction` of `budget_s` (seconds of training after the first,
  compiling step). Call `observe(step, elapsed_s)` at points where the device has caught up (e.g.
  after fetching metrics): once `elapsed_s` reaches (1 − decay_fraction) · budget_s, the decay
  starts at that step and lasts as many steps as the measured rate fits into the rest of the
  budget. With `budget_s=None` it decays over the last `decay_fraction` of `max_steps`
  (deterministic). The run is over when `done(step)`. `decay_start`/`decay_steps` say what was
  decided (log them: with them fixed, a run is reproducible).
  """

  def __init__(self, *, learning_rate: float, warmup_steps: int, max_steps: int,
               budget_s: float | None = None, decay_fraction: float = 0.2,
               final_fraction: float = 0.1):
    if learning_rate <= 0:
      raise ValueError(f"learning_rate must be positive, got {learning_rate}")
    if warmup_steps < 0 or max_steps <= 0:
      raise ValueError(f"need warmup_steps >= 0 and max_steps > 0, got {warmup_steps}, "
                       f"{max_steps}")
    if budget_s is not None and not budget_s > 0:
      raise ValueError(f"budget_s must be positive (or None), got {budget_s}")
    if not 0 < decay_fraction <= 1:
      raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    if not 0 <= final_fraction <= 1:
      raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction}")
    self.learning_rate, self.warmup = float(learning_rate), max(int(warmup_steps), 1)
    self.max_steps, self.budget_s = int(max_steps), budget_s
    self.decay_fraction, self.final_fraction = float(decay_fraction), float(final_fraction)
    self.decay_start: int | None = None
    self.decay_steps: int | None = None
    if budget_s is None:
      self.decay_steps = max(1, int(round(self.max_steps * self.decay_fraction)))
      self.decay_start = self.max_steps - self.decay_steps

  def observe(self, step: int, elapsed_s: float, *, steps_timed: int | None = None) -> None:
    """At `step`, `elapsed_s` of the budget have passed over `steps_timed` steps (default
    `step`: the clock started at step 0)."""
    if self.decay_start is not None or elapsed_s < (1 - self.decay_fraction) * self.budget_s:
      return
    rate = (step if steps_timed is None else steps_timed) / max(elapsed_s, 1e-9)
    left = max(self.max_steps - step, 1)
    self.decay_start = int(step)
    self.decay_steps = int(min(left, max(1, rate * (self.budget_s - elapsed_s))))

  def done(self, step: int) -> bool:
    return step >= self.max_steps or (
        self.decay_start is not None and step >= self.decay_start + self.decay_steps)

  def __call__(self, step: int) -> float:
    peak = self.learning_rate * min(1.0, (step + 1.0) / self.warmup)
    if self.decay_start is None or step < self.decay_start:
      return peak
    progress = min(1.0, (step - self.decay_start) / self.decay_steps)
    return peak * (1.0 - (1.0 - self.final_fraction) * progress)


# --------------------------------------------------------------------------------------------
# Loss.


def cross_entropy_with_z_loss(logits: Array, targets: Array, weights: Array, *,
                              z_loss: float) -> tuple[Array, Array]:
  """T5X's weighted cross entropy with z-loss, label smoothing 0.

  Args:
    logits: float `[B, T, V]`.
    targets: int `[B, T]`.
    weights: float `[B, T]` (1 on real target tokens, 0 on padding).
    z_loss: coefficient of `log(Z)^2`, Z the softmax normaliser (T5X: 1e-4).

  Returns:
    (total, z_total): float32 scalars, sums over weighted tokens of `CE + z_loss * log(Z)^2`
    and of the z-loss term alone.
  """
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
  z_term = z_loss * jnp.square(log_z)
  loss = (log_z - target_logit) + z_term
  return jnp.sum(loss * weights), jnp.sum(z_term * weights)


def forward_kl(teacher_logits: Array, student_logits: Array, weights: Array, *,
               temperature: float = 1.0) -> Array:
  """Sum over weighted positions of KL(softmax(t/τ) || softmax(s/τ)); logits `[B, T, V]`."""
  p_log = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  q_log = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  kl = jnp.sum(jnp.exp(p_log) * (p_log - q_log), axis=-1)
  return jnp.sum(kl * weights)


def total_variation(teacher_logits: Array, student_logits: Array, weights: Array, *,
                    temperature: float = 1.0) -> Array:
  """Sum over weighted positions of TV(p, q) = ½ Σ_x |p(x) − q(x)|, p = softmax(t/τ), q =
  softmax(s/τ): at τ = 1 one minus it is the acceptance probability of speculative sampling
  at that position (DistillSpec's observation), so minimising it maximises α directly."""
  p = jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
  q = jax.nn.softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.sum(0.5 * jnp.sum(jnp.abs(p - q), axis=-1) * weights)


DISTILL_LOSSES = {"forward_kl": forward_kl, "tvd": total_variation}


def shift_right(targets: Array) -> Array:
  """T5X decoder inputs: targets `[B, T]` shifted right by one with 0 first."""
  return jnp.pad(targets, ((0, 0), (1, 0)))[:, :-1]


# --------------------------------------------------------------------------------------------
# Steps.


class Trainer:
  """Jitted train / distillation steps for one model config and optimizer.

  Batches are dicts of int32 arrays `inputs` `[B, S]` and `targets` `[B, T]` (0 = padding, EOS
  1 at the end of each row's target). The dropout key of step s is `fold_in(dropout_rng, s)`, so
  steps are reproducible from the state alone.

  The student is a `T5Config` (a T5 of its own) or a `SharedEncoderConfig` (a draft decoder over
  the teacher's frozen encoder output: every step then takes the teacher's parameters, and the
  teacher encodes each batch once, with no gradient). `distill_loss` names the distillation
  objective in `DISTILL_LOSSES` ('forward_kl', DistillSpec's default; 'tvd', whose complement is
  the acceptance rate).
  """

  def __init__(self, config: T5Config | SharedEncoderConfig, tx: optax.GradientTransformation,
               *, schedule: optax.Schedule | None = None, z_loss: float = 1e-4,
               dropout_seed: int = 0, teacher_config: T5Config | None = None,
               distill_temperature: float = 1.0, distill_ce_weight: float = 0.0,
               distill_loss: str = "forward_kl"):
    if not isinstance(config, (T5Config, SharedEncoderConfig)):
      raise TypeError(f"config must be a T5Config or a SharedEncoderConfig, got "
                      f"{type(config).__name__}")
    if z_loss < 0:
      raise ValueError(f"z_loss must be >= 0, got {z_loss}")
    if distill_temperature <= 0:
      raise ValueError(f"distill_temperature must be positive, got {distill_temperature}")
    if distill_loss not in DISTILL_LOSSES:
      raise ValueError(f"distill_loss must be one of {sorted(DISTILL_LOSSES)}, got "
                       f"{distill_loss!r}")
    if teacher_config is not None and teacher_config.vocab_size != config.vocab_size:
      raise ValueError(f"teacher and student vocabularies differ: {teacher_config.vocab_size} vs "
                       f"{config.vocab_size}")
    self.reads_teacher_encoder = isinstance(config, SharedEncoderConfig)
    if self.reads_teacher_encoder:
      if teacher_config is None:
        raise ValueError("a SharedEncoderConfig student reads the teacher's encoder: "
                         "teacher_config is required")
      if teacher_config.emb_dim != config.encoder_dim:
        raise ValueError(f"the student reads encoder states of width {config.encoder_dim} "
                         f"(config.encoder_dim), the teacher's are {teacher_config.emb_dim} "
                         f"(teacher_config.emb_dim)")
    self.config = config
    self.distill_loss = distill_loss
    self.tx = tx
    self.schedule = schedule
    self.z_loss = float(z_loss)
    self.dropout_rng = jax.random.PRNGKey(dropout_seed)
    self.teacher_config = teacher_config
    self.distill_temperature = float(distill_temperature)
    self.distill_ce_weight = float(distill_ce_weight)
    self.train_step = jax.jit(self._train_step)
    self.distill_step = jax.jit(self._distill_step)
    self.eval_step = jax.jit(self._eval_step)

  def init_state(self, params: Params) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.tx.init(params))

  def abstract_state(self, params: Params) -> TrainState:
    return jax.eval_shape(self.init_state, params)

  def _forward(self, params, batch, rng, encoded=None):
    """The student's teacher-forced logits (`encoded`: the teacher's encoder output, for a
    shared-encoder student)."""
    kwargs = dict(deterministic=rng is None, rngs=None if rng is None else {"dropout": rng})
    decoder_inputs = shift_right(batch["targets"])
    if self.reads_teacher_encoder:
      return shared_encoder.network(self.config).apply(
          {"params": params}, encoded, batch["inputs"] > 0, decoder_inputs, **kwargs)
    return transformer(self.config).apply({"params": params}, batch["inputs"], decoder_inputs,
                                          **kwargs)

  def _teacher(self, teacher_params, batch, *, logits: bool):
    """(the teacher's encoder output, its teacher-forced logits or None), without gradients."""
    net = transformer(self.teacher_config)
    encoded = net.apply({"params": teacher_params}, batch["inputs"], method=net.encode)
    out = None
    if logits:
      out = net.apply({"params": teacher_params}, encoded, batch["inputs"] > 0,
                      shift_right(batch["targets"]), method=net.decode_encoded)
    return jax.lax.stop_gradient(encoded), None if out is None else jax.lax.stop_gradient(out)

  def _encoded(self, teacher_params, batch):
    """The teacher's encoder output when the student reads it, else None."""
    if not self.reads_teacher_encoder:
      return None
    if teacher_params is None:
      raise ValueError("a shared-encoder student's steps need teacher_params")
    return self._teacher(teacher_params, batch, logits=False)[0]

  def _metrics(self, logits, batch, total, z_total, weights, state):
    count = jnp.maximum(jnp.sum(weights), 1.0)
    correct = jnp.sum((jnp.argmax(logits, -1) == batch["targets"]) * weights)
    out = {"loss": total / count, "z_loss": z_total / count, "accuracy": correct / count,
           "tokens": jnp.sum(weights)}
    if self.schedule is not None and state is not None:
      out["learning_rate"] = jnp.asarray(self.schedule(state.step), jnp.float32)
    elif state is not None and hasattr(state.opt_state, "hyperparams"):  # Set by the caller.
      out["learning_rate"] = jnp.asarray(state.opt_state.hyperparams["learning_rate"],
                                         jnp.float32)
    return out

  def _apply(self, state, grads):
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state)

  def _train_step(self, state: TrainState, batch: dict,
                  teacher_params: Params | None = None) -> tuple[TrainState, dict]:
    weights = (batch["targets"] > 0).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    rng = jax.random.fold_in(self.dropout_rng, state.step)
    encoded = self._encoded(teacher_params, batch)

    def loss_fn(params):
      logits = self._forward(params, batch, rng, encoded)
      total, z_total = cross_entropy_with_z_loss(logits, batch["targets"], weights,
                                                 z_loss=self.z_loss)
      return total / count, (logits, total, z_total)

    (_, (logits, total, z_total)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = self._metrics(logits, batch, total, z_total, weights, state)
    metrics["grad_norm"] = optax.global_norm(grads)
    return self._apply(state, grads), metrics

  def _distill_step(self, state: TrainState, teacher_params: Params,
                    batch: dict) -> tuple[TrainState, dict]:
    if self.teacher_config is None:
      raise ValueError("distill_step needs a Trainer built with teacher_config")
    weights = (batch["targets"] > 0).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weights), 1.0)
    rng = jax.random.fold_in(self.dropout_rng, state.step)
    encoded, teacher_logits = self._teacher(teacher_params, batch, logits=True)
    distance = DISTILL_LOSSES[self.distill_loss]

    def loss_fn(params):
      logits = self._forward(params, batch, rng, encoded if self.reads_teacher_encoder else None)
      kl = distance(teacher_logits, logits, weights, temperature=self.distill_temperature)
      total, z_total = cross_entropy_with_z_loss(logits, batch["targets"], weights,
                                                 z_loss=self.z_loss)
      loss = (kl + self.distill_ce_weight * total) / count
      return loss, (logits, kl, total, z_total)

    (loss, (logits, kl, total, z_total)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    metrics = self._metrics(logits, batch, total, z_total, weights, state)
    metrics.update(kl=kl / count, distill_loss=loss, grad_norm=optax.global_norm(grads))
    if self.distill_loss != "forward_kl":  # `kl` holds the chosen distance; name it.
      metrics[self.distill_loss] = metrics.pop("kl")
    return self._apply(state, grads), metrics

  def _eval_step(self, params: Params, batch: dict,
                 teacher_params: Params | None = None) -> dict:
    """Deterministic loss / accuracy of `params` on a batch (no update)."""
    weights = (batch["targets"] > 0).astype(jnp.float32)
    logits = self._forward(params, batch, None, self._encoded(teacher_params, batch))
    total, z_total = cross_entropy_with_z_loss(logits, batch["targets"], weights,
                                               z_loss=self.z_loss)
    return self._metrics(logits, batch, total, z_total, weights, None)


def kl_on_batch(teacher: T5Model, student: T5Model, batch: dict) -> float:
  """Mean over target tokens of KL(p_teacher || q_student) (deterministic, temperature 1)."""
  dec = shift_right(jnp.asarray(batch["targets"]))
  weights = (jnp.asarray(batch["targets"]) > 0).astype(jnp.float32)
  kl = forward_kl(teacher.logits(batch["inputs"], dec), student.logits(batch["inputs"], dec),
                  weights)
  return float(kl / jnp.maximum(jnp.sum(weights), 1.0))


# --------------------------------------------------------------------------------------------
# Data.


@functools.lru_cache(maxsize=None)
def tokenizer():
  """The committed SentencePiece processor (`specdec.data.vocabulary().processor`): training
  and evaluation need neither seqio nor tensorflow (e.g. on an accelerator host with only JAX)."""
  from specdec import data  # pylint: disable=g-import-not-at-top
  return data.vocabulary().processor


def task_prefix(task: str) -> str:
  from specdec import data  # pylint: disable=g-import-not-at-top
  if task not in data.TASK_PREFIXES:
    raise ValueError(f"unknown task {task!r}; known: {sorted(data.TASK_PREFIXES)}")
  return data.TASK_PREFIXES[task]


def encode(texts: Sequence[str], *, max_length: int, sp=None, prefix: str = "") -> list:
  """Token ids of each text (with `prefix`), trimmed to `max_length - 1`, EOS appended (seqio's
  `tokenize` + `append_eos_after_trim`). Returns a list of int32 numpy arrays."""
  sp = sp or tokenizer()
  ids = sp.EncodeAsIds([prefix + t for t in texts])
  return [np.asarray(x[:max_length - 1] + [EOS_ID], np.int32) for x in ids]


def tokenize_pairs(pairs: Sequence[tuple[str, str]], *, task: str = "specdec_ende",
                   max_length: int = 64, drop_long: bool = True, sp=None
                   ) -> tuple[list, list]:
  """Tokenises (source, target) pairs as the seqio task does (task prefix on the inputs, EOS on
  both). With `drop_long`, pairs whose inputs or targets (with EOS) exceed `max_length` are
  dropped instead of trimmed."""
  sp = sp or tokenizer()
  prefix = task_prefix(task)
  inputs = encode([s for s, _ in pairs], max_length=10**9, sp=sp, prefix=prefix)
  targets = encode([t for _, t in pairs], max_length=10**9, sp=sp)
  out_in, out_tg = [], []
  for x, y in zip(inputs, targets):
    if len(x) > max_length or len(y) > max_length:
      if drop_long:
        continue
      x = np.concatenate([x[:max_length - 1], [EOS_ID]]).astype(np.int32)
      y = np.concatenate([y[:max_length - 1], [EOS_ID]]).astype(np.int32)
    out_in.append(x)
    out_tg.append(y)
  return out_in, out_tg


def bucket_length(n: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f"sequence of length {n} exceeds the largest bucket {buckets[-1]}")


def pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


class Batches:
  """Deterministic, resumable batches of tokenised pairs.

  Epoch e is a permutation drawn from `default_rng([seed, e])`; within chunks of
  `sort_chunk` batches the examples are sorted by length (so a batch pads to a short bucket),
  then the batches of the epoch are shuffled. `batch(step)` depends only on (seed, step).
  Each batch pads inputs and targets to the same bucket length (one of `buckets`), so a jitted
  step compiles at most `len(buckets)` times.
  """

  def __init__(self, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
               batch_size: int, seed: int = 0, buckets: Sequence[int] = DEFAULT_BUCKETS,
               sort_chunk: int = 50):
    if len(inputs) != len(targets):
      raise ValueError(f"inputs and targets differ in length: {len(inputs)} vs {len(targets)}")
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(inputs) < batch_size:
      raise ValueError(f"batch_size {batch_size} exceeds the number of examples {len(inputs)}")
    self.inputs, self.targets = list(inputs), list(targets)
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.buckets = tuple(sorted(buckets))
    self.sort_chunk = int(sort_chunk)
    self.lengths = np.array([max(len(x), len(y)) for x, y in zip(inputs, targets)])
    if self.lengths.max() > self.buckets[-1]:
      raise ValueError(f"an example of length {self.lengths.max()} exceeds the largest bucket "
                       f"{self.buckets[-1]}")
    self.batches_per_epoch = len(inputs) // batch_size
    self._epoch_cache: tuple[int, np.ndarray] | None = None

  def _epoch(self, epoch: int) -> np.ndarray:
    if self._epoch_cache is not None and self._epoch_cache[0] == epoch:
      return self._epoch_cache[1]
    rng = np.random.default_rng([self.seed, epoch])
    n = self.batches_per_epoch * self.batch_size
    perm = rng.permutation(len(self.inputs))[:n]
    chunk = self.sort_chunk * self.batch_size
    for start in range(0, n, chunk):
      part = perm[start:start + chunk]
      perm[start:start + chunk] = part[np.argsort(self.lengths[part], kind="stable")]
    order = perm.reshape(self.batches_per_epoch, self.batch_size)
    order = order[rng.permutation(self.batches_per_epoch)]
    self._epoch_cache = (epoch, order)
    return order

  def indices(self, step: int) -> np.ndarray:
    epoch, k = divmod(int(step), self.batches_per_epoch)
    return self._epoch(epoch)[k]

  def batch(self, step: int) -> dict:
    idx = self.indices(step)
    length = bucket_length(int(self.lengths[idx].max()), self.buckets)
    return {"inputs": pad_rows([self.inputs[i] for i in idx], length),
            "targets": pad_rows([self.targets[i] for i in idx], length)}


# --------------------------------------------------------------------------------------------
# Checkpoints.


class Checkpoints:
  """Orbax `CheckpointManager` of `TrainState`s under `directory` (keeps `max_to_keep`)."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, *, wait: bool = True) -> None:
    step = int(state.step)
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)
    if wait:
      self.manager.wait_until_finished()

  def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
    step = self.latest_step() if step is None else step
    if step is None:
      raise ValueError(f"no checkpoint in {self.directory}")
    try:
      return self.manager.restore(
          step, args=self._ocp.args.StandardRestore(on_default_device(abstract_state)))
    except Exception as e:  # orbax raises many types; name the checkpoint either way.
      raise ValueError(f"could not restore step {step} from {self.directory}: {e}") from e

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


# --------------------------------------------------------------------------------------------
# Evaluation.


def encoder_batches(inputs: Sequence[np.ndarray], *, batch_size: int,
                    buckets: Sequence[int] = DEFAULT_BUCKETS) -> list[tuple[np.ndarray, int]]:
  """Groups tokenised inputs (in order) into `[batch_size, L]` arrays, L a bucket; the last batch
  is filled with one-token (EOS) rows. Returns (array, number of real rows) pairs."""
  out = []
  for start in range(0, len(inputs), batch_size):
    rows = list(inputs[start:start + batch_size])
    real = len(rows)
    rows += [np.array([EOS_ID], np.int32)] * (batch_size - real)
    length = bucket_length(max(len(r) for r in rows), buckets)
    out.append((pad_rows(rows, length), real))
  return out


def detokenize(tokens: np.ndarray, *, sp=None) -> list[str]:
  """`[B, T]` decoded ids (0 after EOS) → strings (ids up to the first EOS)."""
  sp = sp or tokenizer()
  texts = []
  for row in np.asarray(tokens):
    ids = []
    for t in row.tolist():
      if t == EOS_ID:
        break
      if t != PAD_ID:
        ids.append(t)
    texts.append(sp.DecodeIds(ids))
  return texts


def translate(model: T5Model, sources: Sequence[str], *, task: str = "specdec_ende",
              batch_size: int = 64, max_input_length: int = 64, max_decode_len: int = 64,
              buckets: Sequence[int] = DEFAULT_BUCKETS, sp=None) -> list[str]:
  """Greedy outputs for raw source strings (task prefix added, inputs trimmed as seqio does)."""
  from specdec.decoding import generate  # pylint: disable=g-import-not-at-top
  sp = sp or tokenizer()
  inputs = encode(sources, max_length=max_input_length, sp=sp, prefix=task_prefix(task))
  outputs = []
  for enc, real in encoder_batches(inputs, batch_size=batch_size, buckets=buckets):
    result = generate(model, enc, max_decode_len=max_decode_len)
    outputs += detokenize(np.asarray(result.tokens)[:real], sp=sp)
  return outputs


def cross_entropy_per_token(trainer: Trainer, params: Params, inputs: Sequence[np.ndarray],
                            targets: Sequence[np.ndarray], *, batch_size: int = 64,
                            buckets: Sequence[int] = DEFAULT_BUCKETS,
                            teacher_params: Params | None = None) -> float:
  """Mean teacher-forced cross-entropy (nats per target token, EOS included, z-loss excluded,
  no dropout) of `params` on tokenised pairs: the held-out loss that shows over- or underfitting
  where BLEU of greedy outputs is noisy."""
  if len(inputs) != len(targets) or not inputs:
    raise ValueError(f"need equally many (and some) inputs and targets, got {len(inputs)} and "
                     f"{len(targets)}")
  total = tokens = 0.0
  for start in range(0, len(inputs), batch_size):
    x, y = inputs[start:start + batch_size], targets[start:start + batch_size]
    length = bucket_length(max(max(len(r) for r in x), max(len(r) for r in y)), buckets)
    m = jax.device_get(trainer.eval_step(params, {"inputs": pad_rows(x, length),
                                                  "targets": pad_rows(y, length)},
                                         teacher_params))
    total += (float(m["loss"]) - float(m["z_loss"])) * float(m["tokens"])
    tokens += float(m["tokens"])
  return total / tokens


def evaluate_bleu(model: T5Model, pairs: Sequence[tuple[str, str]], *,
                  task: str = "specdec_ende", batch_size: int = 64, max_decode_len: int = 64,
                  buckets: Sequence[int] = DEFAULT_BUCKETS, sp=None) -> tuple[float, list[str]]:
  """Corpus BLEU (sacrebleu, `specdec.data.bleu`) of greedy translations of `pairs`."""
  from specdec import data  # pylint: disable=g-import-not-at-top
  predictions = translate(model, [s for s, _ in pairs], task=task, batch_size=batch_size,
                          max_decode_len=max_decode_len, buckets=buckets, sp=sp)
  return data.bleu([t for _, t in pairs], predictions)["bleu"], predictions


def acceptance_rate(target: T5Model, draft: T5Model, enc_batches: Iterable[Any],
                    temperature: float, *, gamma: int = 4, max_decode_len: int = 64,
                    seed: int = 0) -> float:
  """α of `draft` against `target`: `speculative_generate` over each `[B, S]` encoder batch (or
  (batch, real rows) pair from `encoder_batches`), stats pooled over the real rows, α from
  `SpeculativeStats.summary()['alpha']`."""
  from specdec.speculative import speculative_generate  # pylint: disable=g-import-not-at-top
  pooled = []
  for i, item in enumerate(enc_batches):
    enc, real = item if isinstance(item, tuple) else (item, len(item))
    result = speculative_generate(target, draft, enc, gamma=gamma, max_decode_len=max_decode_len,
                                  temperature=temperature,
                                  rng=None if temperature == 0 else
                                  jax.random.fold_in(jax.random.PRNGKey(seed), i))
    pooled.append(jax.tree_util.tree_map(lambda x, r=real: np.asarray(x)[:r], result.stats))
  stats = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *pooled)
  return float(stats.summary()["alpha"])


def model_from_state(config: T5Config, state: TrainState) -> T5Model:
  return T5Model(config=config, params=state.params)


__all__ = [
    "Batches", "BudgetSchedule", "Checkpoints", "TrainState", "Trainer", "acceptance_rate",
    "cross_entropy_per_token", "set_learning_rate",
    "cross_entropy_with_z_loss",
    "encode", "encoder_batches", "evaluate_bleu", "forward_kl", "kl_on_batch", "make_optimizer",
    "make_schedule", "save_for_inference", "shift_right", "tokenize_pairs", "total_variation",
    "translate",
]


def save_for_inference(model: Any, path: str, *, dtype: str = "bfloat16") -> None:
  """`model.save` (a `T5Model` or `SharedEncoderDraft`) with the parameters stored as `dtype`:
  'bfloat16' (half the bytes, restored exactly as float32), 'int8' (per-channel scales, a
  quarter; see `specdec.weights`) or 'float32'."""
  from specdec import weights  # pylint: disable=g-import-not-at-top
  if dtype not in weights.FORMATS:
    raise ValueError(f"dtype must be one of {weights.FORMATS}, got {dtype!r}")
  model.save(path, weights=dtype)
