"""Reading T5X checkpoints and gin files.

The fixture in testdata/t5x_tiny_v1_1/ is a real checkpoint written by T5X's own `Checkpointer`
(legacy msgpack + one zarr folder per array, Adafactor state included), with what T5X computed
from it (`reference.json`: teacher-forced logits and greedy tokens).
"""

import json
import os
import shutil

import jax
import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts

from conftest import load_script
from specdec import T5Config, T5Model, generate, t5x_gin, t5x_import

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "testdata", "t5x_tiny_v1_1")
CHECKPOINT = os.path.join(FIXTURE, "checkpoint_0")
GIN = os.path.join(FIXTURE, "tiny.gin")

with open(os.path.join(FIXTURE, "reference.json")) as f:
  REFERENCE = json.load(f)
CONFIG = T5Config(**REFERENCE["config"])


@pytest.fixture(scope="module")
def model() -> T5Model:
  return T5Model.from_t5x(CHECKPOINT, CONFIG)


def _copy(tmp_path) -> str:
  dest = os.path.join(tmp_path, "checkpoint_0")
  shutil.copytree(CHECKPOINT, dest)
  for root, dirs, files in os.walk(dest):  # The copy may inherit read-only modes.
    for name in dirs + files:
      os.chmod(os.path.join(root, name), 0o755)
  return dest


def _leaf(params, dotted: str) -> np.ndarray:
  for key in dotted.split("."):
    params = params[key]
  return np.asarray(params)


def _rewrite(folder: str, array: np.ndarray, *, chunks=None) -> None:
  """Replaces a zarr array folder with `array` (its dtype, and the given chunk shape)."""
  shutil.rmtree(folder)
  spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": folder},
          "metadata": {"shape": list(array.shape), "chunks": list(chunks or array.shape),
                       "compressor": {"id": "gzip", "level": 1}},
          "dtype": "bfloat16" if array.dtype == ml_dtypes.bfloat16 else array.dtype.name}
  store = ts.open(spec, create=True, open=False).result()
  store.write(array).result()


# --- the real checkpoint --------------------------------------------------------------------


def test_loads_every_parameter_of_the_real_checkpoint(model):
  names = t5x_import.list_arrays(CHECKPOINT)
  assert len(names) == len(jax.tree_util.tree_leaves(model.params))
  assert names["target.decoder.layers_0.mlp.wi_0.kernel"] == (32, 48)
  # Values are the zarr folder's, not the optimizer state's.
  store = ts.open({"driver": "zarr", "kvstore": {
      "driver": "file", "path": os.path.join(CHECKPOINT, "target.encoder.layers_1.mlp.wo.kernel")}
  }).result()
  np.testing.assert_array_equal(
      _leaf(model.params, "encoder.layers_1.mlp.wo.kernel"), store.read().result())
  for leaf in jax.tree_util.tree_leaves(model.params):
    assert leaf.dtype == np.float32


def test_logits_match_t5x(model):
  logits = model.logits(np.asarray(REFERENCE["encoder_input_tokens"]),
                        np.asarray(REFERENCE["decoder_input_tokens"]))
  expected = np.asarray(REFERENCE["logits"], np.float32)
  assert logits.shape == expected.shape == (3, 10, 64)
  np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_greedy_decode_matches_t5x(model):
  expected = np.asarray(REFERENCE["greedy_tokens"])
  # T5X's temperature_sample stops a row at EOS=1 and pads it with 0; the stored rows never reach
  # EOS within 16 tokens, so eos_id=1 (T5X's) must leave every row full length.
  assert REFERENCE["greedy_decode_len"] == 16 and not (expected == 1).any()
  result = generate(model, np.asarray(REFERENCE["encoder_input_tokens"]), max_decode_len=16,
                    eos_id=1)
  np.testing.assert_array_equal(np.asarray(result.tokens), expected)


def test_parent_folder_with_one_checkpoint(model):
  params = t5x_import.load_params(FIXTURE, CONFIG)
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, jax.device_get(model.params))


def test_wrong_config_names_the_parameters():
  with pytest.raises(ValueError, match=r"mlp/wi_0/kernel: expected shape \(32, 64\), found "
                     r"\(32, 48\)"):
    T5Model.from_t5x(CHECKPOINT, CONFIG.replace(mlp_dim=64))
  with pytest.raises(ValueError, match=r"unexpected decoder/layers_2/"):
    T5Model.from_t5x(CHECKPOINT, CONFIG.replace(num_decoder_layers=2))


# --- broken checkpoints ---------------------------------------------------------------------


def test_missing_directory(tmp_path):
  missing = os.path.join(tmp_path, "no_such_checkpoint")
  with pytest.raises(ValueError, match="does not exist: .*no_such_checkpoint"):
    T5Model.from_t5x(missing, CONFIG)


def test_missing_array_folder(tmp_path):
  checkpoint = _copy(tmp_path)
  shutil.rmtree(os.path.join(checkpoint, "target.decoder.layers_1.self_attention.key.kernel"))
  with pytest.raises(ValueError, match=r"target\.decoder\.layers_1\.self_attention\.key\.kernel "
                     r"\(folder .*checkpoint_0/target\.decoder\.layers_1\.self_attention\.key"
                     r"\.kernel/ does not exist\)"):
    T5Model.from_t5x(checkpoint, CONFIG)


def test_array_with_wrong_shape(tmp_path):
  checkpoint = _copy(tmp_path)
  _rewrite(os.path.join(checkpoint, "target.encoder.layers_0.mlp.wo.kernel"),
           np.zeros((40, 32), np.float32))
  with pytest.raises(ValueError, match=r"target\.encoder\.layers_0\.mlp\.wo\.kernel in .* has "
                     r"shape \(40, 32\), but the checkpoint file records \(48, 32\)"):
    T5Model.from_t5x(checkpoint, CONFIG)


def test_truncated_checkpoint_file(tmp_path):
  checkpoint = _copy(tmp_path)
  path = os.path.join(checkpoint, "checkpoint")
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r"Corrupt T5X checkpoint file .*checkpoint_0/checkpoint"):
    T5Model.from_t5x(checkpoint, CONFIG)
  os.remove(path)
  with pytest.raises(ValueError, match=r"has no 'checkpoint' file"):
    T5Model.from_t5x(checkpoint, CONFIG)


def test_bfloat16_and_chunked_arrays(tmp_path, model):
  """A T5X-style checkpoint whose arrays are bfloat16, one stored in 16x16 chunks."""
  checkpoint = _copy(tmp_path)
  rng = np.random.default_rng(0)
  expected = {}
  for name, chunks in [("token_embedder.embedding", (16, 16)),  # [64, 32]: 8 chunks.
                       ("decoder.layers_2.mlp.wi_1.kernel", None),
                       ("encoder.encoder_norm.scale", None)]:
    shape = _leaf(model.params, name).shape
    value = rng.normal(size=shape).astype(ml_dtypes.bfloat16)
    _rewrite(os.path.join(checkpoint, "target." + name), value, chunks=chunks)
    expected[name] = value.astype(np.float32)
  chunk_files = os.listdir(os.path.join(checkpoint, "target.token_embedder.embedding"))
  assert len([n for n in chunk_files if not n.startswith(".")]) == 8

  params = t5x_import.load_params(checkpoint, CONFIG)
  for name, value in expected.items():
    assert _leaf(params, name).dtype == np.float32
    np.testing.assert_array_equal(_leaf(params, name), value)
  # The arrays left alone still read as before.
  np.testing.assert_array_equal(_leaf(params, "decoder.logits_dense.kernel"),
                                _leaf(model.params, "decoder.logits_dense.kernel"))


# --- gin files ------------------------------------------------------------------------------


def test_gin_file_gives_the_fixture_config():
  assert t5x_gin.config_from_gin(GIN) == CONFIG


def test_gin_overrides_includes_and_errors(tmp_path):
  base = tmp_path / "t5x" / "examples" / "t5" / "t5_1_1" / "base.gin"
  base.parent.mkdir(parents=True)
  base.write_text(
      "from __gin__ import dynamic_registration\n"
      "NUM_EMBEDDINGS = 32128  # rounded up\n"
      "network.T5Config:\n"
      "  vocab_size = %NUM_EMBEDDINGS\n"
      "  dtype = 'bfloat16'\n"
      "  emb_dim = 768\n"
      "  num_heads = 12\n"
      "  mlp_activations = ('gelu',\n"
      "                     'linear')\n"
      "  dropout_rate = %DROPOUT_RATE\n")
  small = base.parent / "small.gin"
  # As T5X's small.gin: the include is relative to the t5x repository root.
  small.write_text("include 't5x/examples/t5/t5_1_1/base.gin'  # imports the rest\n"
                   "network.T5Config:\n  emb_dim = 512\n  num_heads = 6\n")
  with pytest.raises(ValueError, match="macro DROPOUT_RATE is not defined"):
    t5x_gin.config_from_gin(str(small))
  config = t5x_gin.config_from_gin(str(small), DROPOUT_RATE=0.1, dtype="float32")
  assert config == T5Config(vocab_size=32128, emb_dim=512, num_heads=6, num_encoder_layers=6,
                            num_decoder_layers=6, head_dim=64, mlp_dim=2048,
                            mlp_activations=("gelu", "linear"), dropout_rate=0.1,
                            dtype="float32")

  bad = tmp_path / "bad.gin"
  bad.write_text("network.T5Config.vocab_size = 64\nnetwork.T5Config.num_experts = 8\n")
  with pytest.raises(ValueError, match=r"unknown T5Config key\(s\) \['num_experts'\]"):
    t5x_gin.config_from_gin(str(bad))
  with pytest.raises(ValueError, match="Gin file not found: .*missing.gin"):
    t5x_gin.config_from_gin(str(tmp_path / "missing.gin"))


# --- the convert script ---------------------------------------------------------------------


def test_convert_script_round_trip(tmp_path, model):
  convert_t5x = load_script("convert_t5x")
  out = str(tmp_path / "converted")
  convert_t5x.main(["convert_t5x", f"--checkpoint_dir={CHECKPOINT}", f"--gin_file={GIN}",
                    f"--output_dir={out}", "--noprogress"])
  loaded = T5Model.load(out)
  assert loaded.config == CONFIG
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(loaded.params),
                         jax.device_get(model.params))


def test_kvstore_specs_for_local_and_gcs_paths():
  assert t5x_import.kvstore_spec("gs://bucket/models/t5/checkpoint_10") == {
      "driver": "gcs", "bucket": "bucket", "path": "models/t5/checkpoint_10/"}
  assert t5x_import.kvstore_spec("relative/dir") == {
      "driver": "file", "path": os.path.join(os.getcwd(), "relative", "dir") + os.sep}
