"""specdec.distill_data: the target's own outputs as distillation data, and their file."""

import numpy as np
import pytest

from conftest import TINY, load_script
from specdec import distill_data, generate, training


def _inputs(lengths, seed=0, vocab=32):
  rng = np.random.default_rng(seed)
  return [np.concatenate([rng.integers(3, vocab, n - 1), [1]]).astype(np.int32) for n in lengths]


def _cut_at_eos(row):
  eos = np.flatnonzero(row == 1)
  return row[:eos[0] + 1] if eos.size else row


def test_teacher_outputs_are_greedy_outputs_cut_at_eos_in_input_order(tiny_target):
  # Lengths out of order: the function decodes sorted by length and must return input order.
  inputs = _inputs([9, 3, 12, 5, 7, 4])
  outputs = distill_data.teacher_outputs(tiny_target, inputs, batch_size=8, max_decode_len=10)
  expected = np.asarray(generate(tiny_target, training.pad_rows(inputs, 16), max_decode_len=10).tokens)
  assert len(outputs) == len(inputs)
  for got, row in zip(outputs, expected):
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _cut_at_eos(row))
  # Several batches (with filler rows in the last) give the same outputs as one.
  in_pairs = distill_data.teacher_outputs(tiny_target, inputs, batch_size=4, max_decode_len=10)
  for a, b in zip(outputs, in_pairs):
    np.testing.assert_array_equal(a, b)


def test_teacher_outputs_keep_up_to_the_first_eos_and_unfinished_rows_whole(tiny_target,
                                                                           monkeypatch):
  # A stub decoder: row r of a batch echoes its input's first token, then EOS if the input has an
  # even number of tokens; otherwise it never ends. Pins the cut, the order and unfinished rows.
  from specdec import decoding

  class Result:
    def __init__(self, tokens):
      self.tokens = tokens

  def stub_generate(model, enc, *, max_decode_len, temperature, rng):
    del model, temperature, rng
    out = np.zeros((enc.shape[0], max_decode_len), np.int32)
    for r, row in enumerate(np.asarray(enc)):
      n = int(np.sum(row > 0))
      out[r] = row[0]
      if n % 2 == 0:
        out[r, 1], out[r, 2:] = 1, 0
    return Result(out)

  monkeypatch.setattr(decoding, "generate", stub_generate)
  inputs = _inputs([5, 2, 7, 4, 3], seed=1)
  outputs = distill_data.teacher_outputs(tiny_target, inputs, batch_size=2, max_decode_len=6)
  for x, got in zip(inputs, outputs):
    expected = [x[0], 1] if len(x) % 2 == 0 else [x[0]] * 6
    np.testing.assert_array_equal(got, expected)


def test_teacher_outputs_reject_bad_arguments(tiny_target):
  inputs = _inputs([3, 4])
  with pytest.raises(TypeError, match="teacher"):
    distill_data.teacher_outputs(object(), inputs)
  with pytest.raises(ValueError, match="temperature"):
    distill_data.teacher_outputs(tiny_target, inputs, temperature=-1.0)
  with pytest.raises(ValueError, match="batch_size"):
    distill_data.teacher_outputs(tiny_target, inputs, batch_size=0)
  with pytest.raises(ValueError, match="empty"):
    distill_data.teacher_outputs(tiny_target, [])


def test_file_round_trip_and_errors_name_the_file(tmp_path):
  inputs = _inputs([3, 5, 4], seed=2)
  targets = _inputs([6, 2, 9], seed=3)
  path = str(tmp_path / "sub" / "outputs.npz")
  distill_data.save(path, inputs, targets, meta={"teacher": "/t", "temperature": 0.0})
  got_in, got_tg, meta = distill_data.load(path)
  assert meta == {"teacher": "/t", "temperature": 0.0, "count": 3}
  for a, b in zip(got_in + got_tg, inputs + targets):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    distill_data.load(str(tmp_path / "missing.npz"))
  garbage = tmp_path / "garbage.npz"
  garbage.write_bytes(b"not a zip file")
  with pytest.raises(ValueError, match="garbage.npz"):
    distill_data.load(str(garbage))
  # Offsets that do not index the ids.
  bad = tmp_path / "bad.npz"
  with np.load(path) as f:
    arrays = dict(f)
  arrays["target_offsets"] = arrays["target_offsets"][::-1].copy()
  np.savez(bad, **arrays)
  with pytest.raises(ValueError, match="bad.npz.*target_offsets"):
    distill_data.load(str(bad))
  with pytest.raises(ValueError, match="equally many"):
    distill_data.save(path, inputs, targets[:2])


def test_train_reads_teacher_outputs_and_checks_them(tmp_path):
  script = load_script("train")
  with pytest.raises(ValueError, match="distill_targets needs teacher_dir"):
    script.train(model_config=TINY, model_dir=str(tmp_path / "run"), train_steps=1,
                 distill_targets=str(tmp_path / "x.npz"))
  path = str(tmp_path / "outputs.npz")
  inputs, targets = _inputs([3, 70, 5], seed=4), _inputs([4, 4, 66], seed=5)
  distill_data.save(path, inputs, targets, meta={"task": "specdec_ende", "teacher": "/t"})
  log = []
  got_in, got_tg = script._load_distill_targets(path, teacher_dir="/t", task="specdec_ende",
                                                max_length=64, log=log.append)
  # Pairs longer than max_length are dropped, as for the labelled data.
  assert len(got_in) == 1 and "1 of 3" in log[0]
  np.testing.assert_array_equal(got_tg[0], targets[0])
  with pytest.raises(ValueError, match="specdec_cnndm"):
    script._load_distill_targets(path, teacher_dir="/t", task="specdec_cnndm", max_length=64,
                                 log=log.append)
  script._load_distill_targets(path, teacher_dir="/other", task="specdec_ende", max_length=64,
                               log=log.append)
  assert "warning" in log[-2] and "/other" in log[-2]
