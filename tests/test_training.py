"""specdec.training and scripts/train.py on tiny configs: loss, resumable checkpoints, distillation."""

import datetime
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import TINY, TINY_DRAFT, load_script
from specdec import T5Model, training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_DROPOUT = TINY.replace(dropout_rate=0.1)


def _synthetic_batch(seed=0, batch=4, length=8, vocab=32):
  """Targets are a deterministic function of the inputs (reversed), so the loss can drop."""
  rng = np.random.default_rng(seed)
  inputs = rng.integers(3, vocab, size=(batch, length)).astype(np.int32)
  inputs[:, -1] = 1
  inputs[0, 5:] = 0
  inputs[0, 4] = 1
  targets = np.zeros_like(inputs)
  for b in range(batch):
    n = int(np.sum(inputs[b] > 1))
    targets[b, :n] = inputs[b, :n][::-1]
    targets[b, n] = 1
  return {"inputs": inputs, "targets": targets}


def _trainer(config, **kwargs):
  sched = training.make_schedule(schedule="constant", learning_rate=1e-2, warmup_steps=0,
                                 total_steps=10)
  return training.Trainer(config, training.make_optimizer(optimizer="adamw", schedule=sched),
                          schedule=sched, **kwargs)


@pytest.fixture(scope="module")
def trainer():
  return _trainer(TINY_DROPOUT)


def _run(trainer, state, batch, steps):
  losses = []
  for _ in range(steps):
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses


def test_train_steps_lower_the_loss(trainer):
  batch = _synthetic_batch()
  state = trainer.init_state(T5Model.init(TINY_DROPOUT, 0).params)
  state, losses = _run(trainer, state, batch, 12)
  assert int(state.step) == 12
  assert np.all(np.isfinite(losses))
  # Random init gives ~log(32) = 3.47; twelve AdamW steps at lr 1e-2 on one batch must cut it.
  assert losses[-1] < losses[0] - 0.5, losses


def _assert_trees_equal(a, b):
  leaves_a, tree_a = jax.tree_util.tree_flatten(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_checkpoint_resumes_identically(trainer, tmp_path):
  batches = [_synthetic_batch(seed=s) for s in range(3)]
  params = T5Model.init(TINY_DROPOUT, 1).params
  state = trainer.init_state(params)
  for b in batches[:2]:
    state, _ = trainer.train_step(state, b)
  ckpts = training.Checkpoints(str(tmp_path / "ckpt"), max_to_keep=2)
  ckpts.save(state)
  uninterrupted, metrics = trainer.train_step(state, batches[2])
  ckpts.close()

  reopened = training.Checkpoints(str(tmp_path / "ckpt"))
  assert reopened.latest_step() == 2
  restored = reopened.restore(trainer.abstract_state(params))
  assert isinstance(restored, training.TrainState)
  _assert_trees_equal(restored.params, state.params)
  _assert_trees_equal(restored.opt_state, state.opt_state)  # Adam moments and counts too.
  assert int(restored.step) == 2
  resumed, resumed_metrics = trainer.train_step(restored, batches[2])
  _assert_trees_equal(resumed.params, uninterrupted.params)
  _assert_trees_equal(resumed.opt_state, uninterrupted.opt_state)
  assert float(resumed_metrics["loss"]) == float(metrics["loss"])
  reopened.close()


def test_restore_from_empty_directory_names_it(tmp_path):
  ckpts = training.Checkpoints(str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="empty"):
    ckpts.restore(None)


def test_distillation_step_lowers_kl(tiny_target):
  teacher = tiny_target
  draft = T5Model.init(TINY_DRAFT, 3)
  trainer = _trainer(TINY_DRAFT, teacher_config=teacher.config)
  batch = _synthetic_batch(seed=5)
  before = training.kl_on_batch(teacher, draft, batch)
  state = trainer.init_state(draft.params)
  for _ in range(8):
    state, metrics = trainer.distill_step(state, teacher.params, batch)
    assert np.isfinite(float(metrics["kl"]))
  after = training.kl_on_batch(teacher, T5Model(TINY_DRAFT, state.params), batch)
  assert before > 0
  assert after < 0.7 * before, (before, after)


def test_z_loss_zero_is_plain_cross_entropy():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 5, 7)) * 3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, size=(2, 5)), jnp.int32)
  weights = (targets > 0).astype(jnp.float32)
  plain = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, targets) * weights)
  total, z_total = training.cross_entropy_with_z_loss(logits, targets, weights, z_loss=0.0)
  np.testing.assert_allclose(total, plain, rtol=1e-6)
  assert float(z_total) == 0.0
  # With z_loss > 0 the extra term is z * logsumexp^2 on the weighted tokens, and it grows when
  # every logit is shifted up (CE is shift-invariant, log Z is not).
  total, z_total = training.cross_entropy_with_z_loss(logits, targets, weights, z_loss=1e-2)
  lse = jax.scipy.special.logsumexp(logits, axis=-1)
  np.testing.assert_allclose(z_total, 1e-2 * jnp.sum(lse ** 2 * weights), rtol=1e-6)
  np.testing.assert_allclose(total, plain + z_total, rtol=1e-6)
  shifted, _ = training.cross_entropy_with_z_loss(logits + 5.0, targets, weights, z_loss=1e-2)
  assert float(shifted) > float(total)


def test_shift_right_is_t5x_style():
  targets = jnp.array([[5, 6, 1, 0]])
  np.testing.assert_array_equal(training.shift_right(targets), [[0, 5, 6, 1]])


def test_batches_are_deterministic_bucketed_and_cover_the_epoch():
  rng = np.random.default_rng(0)
  inputs = [np.arange(2, 2 + n, dtype=np.int32) for n in rng.integers(1, 40, size=50)]
  targets = [np.arange(2, 2 + n, dtype=np.int32) for n in rng.integers(1, 40, size=50)]
  a = training.Batches(inputs, targets, batch_size=8, seed=3, sort_chunk=2)
  b = training.Batches(inputs, targets, batch_size=8, seed=3, sort_chunk=2)
  seen = []
  for step in range(a.batches_per_epoch):
    batch = a.batch(step)
    assert batch["inputs"].shape == batch["targets"].shape
    assert batch["inputs"].shape[1] in training.DEFAULT_BUCKETS
    seen += list(a.indices(step))
  assert len(set(seen)) == len(seen) == a.batches_per_epoch * 8
  # Resuming at any step (fresh object) gives the same batch; epochs differ.
  for step in (5, 2, 9):
    np.testing.assert_array_equal(a.batch(step)["inputs"], b.batch(step)["inputs"])
  assert not np.array_equal(a.indices(0), a.indices(a.batches_per_epoch))


def test_optimizer_and_schedule_errors():
  with pytest.raises(ValueError, match="optimizer"):
    training.make_optimizer(optimizer="sgd", schedule=lambda s: 1.0)
  with pytest.raises(ValueError, match="schedule"):
    training.make_schedule(schedule="linear", learning_rate=1e-3, warmup_steps=1, total_steps=2)
  sched = training.make_schedule(schedule="rsqrt", learning_rate=1e-2, warmup_steps=100,
                                 total_steps=1)
  np.testing.assert_allclose(float(sched(400)), 1e-2 * 0.5, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown task 'nope'.*specdec_ende"):
    training.task_prefix("nope")


def test_missing_gin_file_is_named():
  script = load_script("train")
  with pytest.raises(ValueError, match="configs/runs/no_such_run.gin"):
    script.main(["--gin_file=configs/models/ende_target.gin",
                 "--gin_file=configs/runs/no_such_run.gin", "--gin.TRAIN_STEPS=1"])
  # The shipped gin files exist and resolve.
  for name in ("configs/models/ende_target.gin", "configs/models/ende_draft.gin",
               "configs/runs/train.gin", "configs/runs/distill.gin"):
    assert os.path.isfile(script.resolve_gin_files([name], [REPO])[0])


def test_train_rejects_buckets_shorter_than_max_length():
  script = load_script("train")
  with pytest.raises(ValueError, match="buckets"):
    script.train(model_config=TINY, model_dir="/nonexistent", train_steps=1, max_length=64,
                 buckets=(16, 32))


def test_warm_start_loads_saved_params_and_rejects_another_config(tiny_target, tmp_path):
  script = load_script("train")
  path = str(tmp_path / "saved")
  tiny_target.save(path)
  # Dropout may differ (a warm start often changes it); everything else must match.
  params = script._warm_start_params(path, tiny_target.config.replace(dropout_rate=0.1))
  _assert_trees_equal(params, tiny_target.params)
  with pytest.raises(ValueError, match=r"init_from=.*saved.*differs"):
    script._warm_start_params(path, tiny_target.config.replace(mlp_dim=tiny_target.config.mlp_dim * 2))
  with pytest.raises(ValueError, match="config.json"):
    script._warm_start_params(str(tmp_path / "missing"), tiny_target.config)


def test_save_for_inference_rounds_to_bfloat16(tiny_target, tmp_path):
  path = str(tmp_path / "shipped")
  training.save_for_inference(tiny_target, path)
  loaded = T5Model.load(path)
  assert loaded.config == tiny_target.config
  for a, b in zip(jax.tree_util.tree_leaves(loaded.params),
                  jax.tree_util.tree_leaves(tiny_target.params)):
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(a, b.astype(jnp.bfloat16).astype(jnp.float32))
  with pytest.raises(ValueError, match="dtype"):
    training.save_for_inference(tiny_target, path, dtype="int4")


def test_cross_entropy_per_token_is_the_mean_over_target_tokens(trainer):
  batch = _synthetic_batch(seed=3)
  params = T5Model.init(TINY_DROPOUT, 0).params
  rows_in = [r[r > 0] for r in batch["inputs"]]
  rows_tg = [r[r > 0] for r in batch["targets"]]
  got = training.cross_entropy_per_token(trainer, params, rows_in, rows_tg, batch_size=3,
                                         buckets=(8,))
  # Reference: deterministic logits on the whole batch, CE summed over real target tokens.
  logits = T5Model(TINY_DROPOUT, params).logits(batch["inputs"],
                                                training.shift_right(batch["targets"]))
  weights = (batch["targets"] > 0).astype(np.float32)
  total, _ = training.cross_entropy_with_z_loss(logits, batch["targets"], weights, z_loss=0.0)
  np.testing.assert_allclose(got, float(total) / weights.sum(), rtol=1e-5)
  with pytest.raises(ValueError, match="inputs and targets"):
    training.cross_entropy_per_token(trainer, params, rows_in, rows_tg[:1])


def test_stop_time_is_the_next_occurrence_and_checked():
  script = load_script("train")
  utc = datetime.timezone.utc
  late = datetime.datetime(2026, 11, 26, 23, 50, tzinfo=utc)
  assert script._deadline("01:30", now=late) == datetime.datetime(
      2026, 11, 27, 1, 30, tzinfo=utc).timestamp()
  assert script._deadline("23:55", now=late) == datetime.datetime(
      2026, 11, 26, 23, 55, tzinfo=utc).timestamp()
  assert script._deadline(1795744200) == 1795744200.0
  assert script._deadline(None) is None
  for bad in ("25:00", "12:60", "noon"):
    with pytest.raises(ValueError, match="stop_time"):
      script._deadline(bad)


# --- shared-encoder drafts -------------------------------------------------------------------

def _shared_config():
  from specdec.shared_encoder import SharedEncoderConfig
  return SharedEncoderConfig.for_target(TINY, emb_dim=8, head_dim=4, mlp_dim=12)


@pytest.mark.parametrize("loss", ["forward_kl", "tvd"])
def test_shared_encoder_distillation_lowers_the_distance(tiny_target, loss):
  """The student reads the teacher's encoder output; its distance to the teacher drops."""
  from specdec.shared_encoder import SharedEncoderDraft
  config = _shared_config()
  draft = SharedEncoderDraft.from_target(tiny_target, config, rng=2)
  trainer = _trainer(config, teacher_config=TINY, distill_loss=loss)
  batch = _synthetic_batch(seed=5)
  dec = training.shift_right(jnp.asarray(batch["targets"]))
  weights = (jnp.asarray(batch["targets"]) > 0).astype(jnp.float32)
  teacher_logits = tiny_target.logits(batch["inputs"], dec)
  distance = training.DISTILL_LOSSES[loss]

  def measured(params):
    logits = SharedEncoderDraft(config, params).logits(tiny_target, batch["inputs"], dec)
    return float(distance(teacher_logits, logits, weights) / weights.sum())

  before = measured(draft.params)
  state = trainer.init_state(draft.params)
  for _ in range(8):
    params = state.params
    state, metrics = trainer.distill_step(state, tiny_target.params, batch)
  # The step's metric is the named distance of the parameters it started from.
  name = "kl" if loss == "forward_kl" else loss
  np.testing.assert_allclose(float(metrics[name]), measured(params), rtol=1e-4)
  assert measured(state.params) < 0.8 * before
  # The encoder is the teacher's: nothing of it is in the student's parameters.
  assert set(state.params) == {"token_embedder", "decoder"}
  # Label training of such a student reads the teacher's encoder too.
  state, metrics = trainer.train_step(state, batch, tiny_target.params)
  assert np.isfinite(float(metrics["loss"]))
  with pytest.raises(ValueError, match="teacher_params"):
    trainer.train_step(state, batch)


def test_total_variation_is_half_the_l1_distance():
  rng = np.random.default_rng(1)
  t, s = (jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32) for _ in range(2))
  weights = jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.float32)
  p = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
  q = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
  want = (0.5 * np.abs(p - q).sum(-1) * np.asarray(weights)).sum()
  np.testing.assert_allclose(training.total_variation(t, s, weights), want, rtol=1e-5)


def test_shared_encoder_trainer_errors():
  config = _shared_config()
  with pytest.raises(ValueError, match="teacher_config"):
    _trainer(config)
  with pytest.raises(ValueError, match="encoder_dim"):
    _trainer(config, teacher_config=TINY.replace(emb_dim=24))
  with pytest.raises(ValueError, match="distill_loss"):
    _trainer(TINY_DRAFT, teacher_config=TINY, distill_loss="jsd")
  script = load_script("train")
  with pytest.raises(ValueError, match="teacher_dir"):
    script.train(model_config=config, model_dir="/nonexistent", train_steps=1)


def test_train_script_trains_and_exports_a_shared_encoder_draft(tmp_path):
  """scripts/train.py end to end on a stand-in target of the real vocabulary: a few distillation
  steps on the target's encoder, α in the summary, an export `load_model` reads back."""
  from specdec import load_model
  from specdec.shared_encoder import SharedEncoderConfig, SharedEncoderDraft, encoder_fingerprint
  target = T5Model.init(TINY.replace(vocab_size=4096), 0)
  target.save(str(tmp_path / "target"))
  config = SharedEncoderConfig.for_target(target.config)
  script = load_script("train")
  summary = script.train(
      model_config=config, model_dir=str(tmp_path / "run"), train_steps=2, batch_size=4,
      teacher_dir=str(tmp_path / "target"), export_dir=str(tmp_path / "export"), log_every=1,
      eval_examples=4, alpha_examples=4, buckets=(64,), distill_loss="tvd", log=lambda *a: None)
  assert set(summary["alpha"]) == {"T=0", "T=1"}
  assert 0 <= summary["alpha"]["T=0"] <= 1
  draft = load_model(str(tmp_path / "export"))
  assert isinstance(draft, SharedEncoderDraft) and draft.config == config
  assert draft.target_fingerprint == encoder_fingerprint(target)


def test_budget_schedule_sizes_its_decay_to_the_clock():
  fixed = training.BudgetSchedule(learning_rate=1.0, warmup_steps=10, max_steps=100,
                                  decay_fraction=0.2)
  assert (fixed.decay_start, fixed.decay_steps) == (80, 20)
  assert fixed(4) == 0.5 and fixed(50) == 1.0 and fixed(90) == pytest.approx(0.55)
  assert fixed(100) == pytest.approx(0.1) and fixed.done(100) and not fixed.done(99)
  timed = training.BudgetSchedule(learning_rate=1.0, warmup_steps=0, max_steps=10**6,
                                  budget_s=100.0, decay_fraction=0.25)
  timed.observe(500, 70.0)  # Before 75 s: nothing decided.
  assert timed.decay_start is None and not timed.done(10**5) and timed(10**5) == 1.0
  timed.observe(600, 80.0, steps_timed=400)  # 5 steps/s, 20 s left: 100 decay steps.
  assert (timed.decay_start, timed.decay_steps) == (600, 100)
  assert timed(650) == pytest.approx(0.55) and timed.done(700)
  timed.observe(700, 90.0)  # Decided once.
  assert timed.decay_steps == 100
  for bad in (dict(budget_s=0.0), dict(decay_fraction=0.0), dict(learning_rate=0.0)):
    with pytest.raises(ValueError, match=next(iter(bad))):
      training.BudgetSchedule(**{**dict(learning_rate=1.0, warmup_steps=1, max_steps=10), **bad})


def test_injected_learning_rate_is_the_one_set(tiny_target):
  """make_optimizer(schedule=None): the step uses the rate set in the state, with no recompile."""
  trainer = training.Trainer(TINY, training.make_optimizer(optimizer="adafactor", schedule=None))
  batch = _synthetic_batch()
  state = trainer.init_state(tiny_target.params)
  zero, metrics = trainer.train_step(training.set_learning_rate(state, 0.0), batch)
  _assert_trees_equal(zero.params, state.params)  # Rate 0: no change.
  assert float(metrics["learning_rate"]) == 0.0
  moved, metrics = trainer.train_step(training.set_learning_rate(state, 1e-2), batch)
  assert float(metrics["learning_rate"]) == pytest.approx(1e-2)
  assert trainer.train_step._cache_size() == 1
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(moved.params),
                                                       jax.tree_util.tree_leaves(state.params)))


def test_train_script_runs_a_time_budget(tmp_path):
  script = load_script("train")
  model = T5Model.init(TINY.replace(vocab_size=4096), 0)
  summary = script.train(model_config=model.config, model_dir=str(tmp_path / "run"),
                         train_steps=10**6, batch_size=4, schedule="wsd", warmup_steps=2,
                         time_budget_s=3.0, decay_fraction=0.5, log_every=2, eval_examples=0,
                         buckets=(64,), log=lambda *a: None)
  assert summary["schedule"] == "wsd" and summary["decay_start"] is not None
  assert summary["steps"] == summary["decay_start"] + summary["decay_steps"]
  with pytest.raises(ValueError, match="time_budget_s"):
    script.train(model_config=model.config, model_dir=str(tmp_path / "x"), train_steps=1,
                 time_budget_s=3.0)
