"""T5Config: T5X's published presets, validation, and the parameter count."""

import json

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from specdec import T5Config, T5Model
from specdec import model as model_lib
from conftest import TINY, TINY_DRAFT

# (emb_dim, num_heads, num_layers, mlp_dim) of T5X's t5x/examples/t5/t5_1_{0,1}/*.gin.
_T5X_SIZES = {
    "t5_1_1_small": (512, 6, 8, 1024),
    "t5_1_1_base": (768, 12, 12, 2048),
    "t5_1_1_large": (1024, 16, 24, 2816),
    "t5_1_1_xl": (2048, 32, 24, 5120),
    "t5_1_1_xxl": (4096, 64, 24, 10240),
    "t5_1_0_small": (512, 8, 6, 2048),
    "t5_1_0_base": (768, 12, 12, 3072),
}


@pytest.mark.parametrize("name", sorted(_T5X_SIZES))
def test_preset_matches_t5x(name):
  config = T5Config.preset(name)
  emb_dim, num_heads, num_layers, mlp_dim = _T5X_SIZES[name]
  assert config.vocab_size == 32128
  assert config.emb_dim == emb_dim
  assert config.num_heads == num_heads
  assert config.num_encoder_layers == num_layers
  assert config.num_decoder_layers == num_layers
  assert config.head_dim == 64
  assert config.mlp_dim == mlp_dim
  assert config.dropout_rate == 0.0
  assert config.dtype == "bfloat16"
  assert config.relative_attention_num_buckets == 32
  assert config.relative_attention_max_distance == 128
  if name.startswith("t5_1_0"):  # v1.0: ReLU, tied embeddings.
    assert config.mlp_activations == ("relu",)
    assert config.logits_via_embedding is True
  else:  # v1.1: gated GELU, untied logits_dense.
    assert config.mlp_activations == ("gelu", "linear")
    assert config.logits_via_embedding is False


@pytest.mark.parametrize("name, count", [
    # The parameter counts of the released checkpoints (as transformers reports them for
    # t5-small, t5-base, google/t5-v1_1-small, google/t5-v1_1-base).
    ("t5_1_0_small", 60_506_624),
    ("t5_1_0_base", 222_903_552),
    ("t5_1_1_small", 76_961_152),
    ("t5_1_1_base", 247_577_856),
])
def test_preset_num_params_match_released_checkpoints(name, count):
  assert T5Config.preset(name).num_params == count


def test_preset_overrides():
  config = T5Config.preset("t5_1_1_xxl", dtype="float32", num_decoder_layers=2)
  assert config.dtype == "float32"
  assert config.num_decoder_layers == 2
  assert config.num_encoder_layers == 24  # Untouched fields keep the preset's values.
  assert config.emb_dim == 4096


def test_preset_unknown_override_field():
  with pytest.raises(TypeError, match="emb_size"):
    T5Config.preset("t5_1_1_small", emb_size=3)


def test_unknown_preset_lists_known_names():
  with pytest.raises(ValueError, match="t5_1_1_tiny") as info:
    T5Config.preset("t5_1_1_tiny")
  for name in _T5X_SIZES:
    assert name in str(info.value)


_SIZE_FIELDS = ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                "num_decoder_layers", "head_dim", "mlp_dim",
                "relative_attention_num_buckets", "relative_attention_max_distance")


@pytest.mark.parametrize("field", _SIZE_FIELDS)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_size_names_field(field, value):
  with pytest.raises(ValueError, match=field):
    TINY.replace(**{field: value})
  with pytest.raises(ValueError, match=field):
    T5Config.preset("t5_1_1_small", **{field: value})


@pytest.mark.parametrize("field", ["emb_dim", "num_heads"])
def test_non_int_size_names_field(field):
  with pytest.raises(TypeError, match=field):
    TINY.replace(**{field: 16.0})


@pytest.mark.parametrize("overrides, field", [
    (dict(mlp_activations=("swish",)), "mlp_activations"),
    (dict(mlp_activations=()), "mlp_activations"),
    (dict(dtype="int8"), "dtype"),
    (dict(dropout_rate=1.0), "dropout_rate"),
])
def test_bad_fields_named(overrides, field):
  with pytest.raises(ValueError, match=field):
    TINY.replace(**overrides)


def test_config_is_hashable_and_lists_become_tuples():
  config = TINY.replace(mlp_activations=["gelu", "linear"])
  assert config.mlp_activations == ("gelu", "linear")
  assert hash(config) == hash(TINY.replace(mlp_activations=("gelu", "linear")))


@pytest.mark.parametrize("config", [TINY, TINY_DRAFT, TINY.replace(num_encoder_layers=3)],
                         ids=["v1_1", "v1_0", "deep_encoder"])
def test_num_params_counts_initialised_model(config):
  model = T5Model.init(config, 0)
  assert model.num_params == config.num_params


_FLOAT32_SPELLINGS = ["float32", np.float32, np.dtype("float32"), jnp.float32,
                      jnp.dtype("float32")]
_BFLOAT16_SPELLINGS = ["bfloat16", jnp.bfloat16, jnp.dtype("bfloat16"), ml_dtypes.bfloat16]


@pytest.mark.parametrize("canonical, spellings", [
    ("float32", _FLOAT32_SPELLINGS), ("bfloat16", _BFLOAT16_SPELLINGS),
    ("float16", ["float16", np.float16, jnp.float16])], ids=["float32", "bfloat16", "float16"])
def test_every_dtype_spelling_gives_one_config(canonical, spellings):
  """T5X's T5Config takes jnp dtypes, gin passes strings: all give the same config, hash and
  config.json (the canonical string)."""
  reference = TINY.replace(dtype=canonical)
  for dtype in spellings:
    config = TINY.replace(dtype=dtype)
    assert config.dtype == canonical and type(config.dtype) is str, dtype
    assert config == reference and hash(config) == hash(reference), dtype
    assert json.dumps(model_lib.config_to_dict(config)) == json.dumps(
        model_lib.config_to_dict(reference)), dtype
    assert T5Config.preset("t5_1_1_small", dtype=dtype).dtype == canonical


@pytest.mark.parametrize("dtype, error", [
    ("int8", ValueError), (jnp.int8, ValueError), (np.float64, ValueError),
    ("Float32", ValueError), ("fp32", ValueError), (3, TypeError), (None, ValueError)])
def test_bad_dtype_names_the_field(dtype, error):
  with pytest.raises(error, match=r"T5Config\.dtype"):
    TINY.replace(dtype=dtype)
