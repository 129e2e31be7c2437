"""Stored weight formats (`specdec.weights`): float32, bfloat16, int8 with per-channel scales."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import weights
from specdec.shared_encoder import SharedEncoderDraft
from specdec.testing import TINY

BIG = TINY.replace(emb_dim=64, head_dim=32, mlp_dim=128)  # Kernels of ≥ 4096 entries: int8.


def _du(path):
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def test_int8_is_per_channel_and_within_half_a_step():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(64, 96)).astype(np.float32) * rng.uniform(0.1, 10, size=(1, 96))
  q, scale = weights.quantize_int8(x, axis=0)
  assert q.dtype == np.int8 and scale.shape == (1, 96)
  np.testing.assert_allclose(scale[0], np.abs(x).max(0) / 127, rtol=1e-6)
  assert (np.abs(q.astype(np.float32) * scale - x) <= scale / 2 + 1e-6).all()
  assert np.abs(q).max() == 127  # Each column's largest entry uses the full range.
  q, scale = weights.quantize_int8(np.zeros((4, 4)), axis=1)  # All-zero rows stay zero.
  assert (q == 0).all() and (scale == 1).all()


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "int8"])
def test_t5model_round_trip(tmp_path, fmt):
  model = specdec.T5Model.init(BIG, 0)
  path = str(tmp_path / fmt)
  model.save(path, weights=fmt)
  loaded = specdec.T5Model.load(path)
  flat = dict(weights._items(model.params))
  for key, got in weights._items(loaded.params):
    want = np.asarray(flat[key])
    assert got.dtype == jnp.float32 and got.shape == want.shape
    if fmt == "float32":
      np.testing.assert_array_equal(got, want)
    elif fmt == "bfloat16" or not weights._quantized(key, want.shape):
      np.testing.assert_array_equal(got, jnp.asarray(want, jnp.bfloat16).astype(jnp.float32))
    else:
      axis = weights._reduce_axis(key)
      step = np.abs(want).max(axis=axis, keepdims=True) / 127
      assert (np.abs(np.asarray(got) - want) <= step / 2 + 1e-6).all(), key
  assert json.load(open(os.path.join(path, "weights.json")))["weights"] == fmt


def test_int8_takes_about_a_quarter_of_the_bytes(tmp_path):
  model = specdec.T5Model.init(BIG.replace(vocab_size=512), 0)
  sizes = {}
  for fmt in ("float32", "int8"):
    model.save(str(tmp_path / fmt), weights=fmt)
    sizes[fmt] = _du(str(tmp_path / fmt / "params"))
  assert sizes["int8"] < 0.35 * sizes["float32"], sizes


def test_shared_encoder_draft_int8(tmp_path):
  target = specdec.T5Model.init(BIG, 0)
  draft = SharedEncoderDraft.from_target(target)
  draft.save(str(tmp_path / "d"), weights="int8")
  loaded = specdec.load_model(str(tmp_path / "d"))
  assert loaded.target_fingerprint == draft.target_fingerprint
  for a, b in zip(jax.tree_util.tree_leaves(loaded.params), jax.tree_util.tree_leaves(draft.params)):
    np.testing.assert_allclose(a, b, atol=float(np.abs(np.asarray(b)).max()) / 127)


def test_format_errors_name_the_file(tmp_path):
  model = specdec.T5Model.init(BIG, 0)
  with pytest.raises(ValueError, match="weights"):
    model.save(str(tmp_path / "m"), weights="int4")
  model.save(str(tmp_path / "m"), weights="int8")
  (tmp_path / "m" / "weights.json").write_text("{")
  with pytest.raises(ValueError, match="weights.json"):
    specdec.T5Model.load(str(tmp_path / "m"))
  (tmp_path / "m" / "weights.json").write_text(json.dumps({"weights": "int4"}))
  with pytest.raises(ValueError, match="int4"):
    specdec.T5Model.load(str(tmp_path / "m"))
  # A stored format other than the one recorded does not restore: named, not silently wrong.
  (tmp_path / "m" / "weights.json").write_text(json.dumps({"weights": "float32"}))
  with pytest.raises(ValueError, match="params"):
    specdec.T5Model.load(str(tmp_path / "m"))
