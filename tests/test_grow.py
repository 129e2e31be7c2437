"""specdec.grow: a T5 (and a shared-encoder draft) grown into a larger shape keeps its outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from specdec import grow
from specdec.decoding import generate
from specdec.model import T5Model
from specdec.shared_encoder import SharedEncoderConfig, SharedEncoderDraft
from specdec.testing import TINY

# Width ×2, one more head, more MLP units, two more layers in each stack.
BIG = TINY.replace(emb_dim=32, num_heads=3, mlp_dim=40, num_encoder_layers=3,
                   num_decoder_layers=4)


@pytest.fixture(scope="module")
def small():
  # A model whose logits are far from uniform, so a wrong copy could not pass unnoticed.
  model = T5Model.init(TINY, 3)
  return model.replace(params=jax.tree_util.tree_map(lambda x: x * 2.0, model.params))


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  enc = jnp.asarray(rng.integers(3, TINY.vocab_size, (3, 7)), jnp.int32)
  enc = enc.at[0, 5:].set(0)  # Padding, so the grown model sees the same mask.
  dec = jnp.asarray(np.concatenate([np.zeros((3, 1)), rng.integers(3, 32, (3, 6))], 1), jnp.int32)
  return enc, dec


@pytest.fixture(scope="module")
def big(small):
  return grow.grow_t5(small, BIG, noise=1e-2)


def test_grown_model_has_the_same_logits(small, big, inputs):
  assert big.config == BIG and big.num_params > 2 * small.num_params
  want = np.asarray(small.logits(*inputs))
  assert np.std(want) > 1.0
  np.testing.assert_allclose(np.asarray(big.logits(*inputs)), want, atol=2e-5 * np.abs(want).max())
  got = generate(big, inputs[0], max_decode_len=6).tokens
  np.testing.assert_array_equal(got, generate(small, inputs[0], max_decode_len=6).tokens)


def test_new_parts_are_closed_branches_and_copies_differ(small, big):
  big = traverse_util.flatten_dict(big.params)
  old = traverse_util.flatten_dict(small.params)
  maps = grow.layer_map(TINY.num_decoder_layers, BIG.num_decoder_layers)
  assert maps == [0, 3]
  new_layer = ("decoder", "layers_1")
  for path, value in big.items():
    if path[:2] == new_layer and path[-2] in ("out", "wo"):
      assert not np.any(value), path  # A new layer is the identity...
    elif path[:2] == new_layer and path[-2] == "query":
      assert np.any(value), path  # ...but not dead: its inputs are fresh kernels.
  inner = TINY.num_heads * TINY.head_dim
  out = big[("decoder", "layers_3", "self_attention", "out", "kernel")]
  assert not np.any(out[inner:])  # The new head writes nothing yet.
  np.testing.assert_array_equal(out[:inner, :16], old[("decoder", "layers_1", "self_attention",
                                                       "out", "kernel")])
  np.testing.assert_array_equal(out[:inner, 16:], out[:inner, :16])
  wo = big[("encoder", "layers_0", "mlp", "wo", "kernel")]
  assert not np.any(wo[TINY.mlp_dim:])
  query = big[("encoder", "layers_0", "attention", "query", "kernel")]
  top, bottom = query[:16, :inner], query[16:, :inner]
  assert not np.allclose(top, bottom)  # The noise breaks the copies' symmetry...
  np.testing.assert_allclose(top + bottom, old[("encoder", "layers_0", "attention", "query",
                                               "kernel")], atol=1e-6)  # ...summing to the old.
  np.testing.assert_array_equal(big[("token_embedder", "embedding")][:, 16:],
                                old[("token_embedder", "embedding")])
  plain = traverse_util.flatten_dict(grow.grow_t5(small, BIG, noise=0.0).params)
  query = plain[("encoder", "layers_0", "attention", "query", "kernel")]
  np.testing.assert_array_equal(query[:16, :inner], query[16:, :inner])  # noise=0: copies.


def test_layer_map():
  assert grow.layer_map(3, 8) == [0, 4, 7]
  assert grow.layer_map(1, 4) == [0]
  assert grow.layer_map(2, 2) == [0, 1]
  with pytest.raises(ValueError, match="cannot grow 3 layers into 2"):
    grow.layer_map(3, 2)


@pytest.mark.parametrize("overrides, match", [
    ({"emb_dim": 24}, "emb_dim must be a multiple"),
    ({"num_heads": 1}, "num_heads must be at least"),
    ({"num_decoder_layers": 1}, "num_decoder_layers must be at least"),
    ({"vocab_size": 64}, "vocab_size must equal"),
    ({"head_dim": 16}, "head_dim must equal"),
    ({"mlp_activations": ("relu",)}, "mlp_activations must equal"),
])
def test_bad_configs(small, overrides, match):
  with pytest.raises(ValueError, match=match):
    grow.grow_t5(small, BIG.replace(**overrides))


def test_bad_arguments(small):
  with pytest.raises(TypeError, match="model must be a T5Model"):
    grow.grow_t5(small.params, BIG)
  with pytest.raises(TypeError, match="config must be a T5Config"):
    grow.grow_t5(small, {"emb_dim": 32})
  for bad in (-1.0, float("nan")):
    with pytest.raises(ValueError, match="noise must be >= 0"):
      grow.grow_t5(small, BIG, noise=bad)
  with pytest.raises(TypeError, match="noise must be a number"):
    grow.grow_t5(small, BIG, noise="0.01")
  tied = small.replace(config=TINY.replace(logits_via_embedding=True))  # Refused before params.
  with pytest.raises(ValueError, match="tied logits"):
    grow.grow_t5(tied, BIG.replace(logits_via_embedding=True))


def test_grown_shared_encoder_draft_reads_the_grown_target(small, big, inputs):
  draft = SharedEncoderDraft.from_target(small, SharedEncoderConfig.for_target(
      TINY, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=12, num_layers=1), rng=5)
  grown = grow.grow_shared_encoder_draft(draft, big)
  assert grown.config == draft.config.replace(encoder_dim=BIG.emb_dim)
  grown.check_target(big)  # Records the grown target's fingerprint...
  with pytest.raises(ValueError):
    grown.check_target(small)  # ...and no longer fits the original.
  want = np.asarray(draft.logits(small, *inputs))
  np.testing.assert_allclose(np.asarray(grown.logits(big, *inputs)), want,
                             atol=2e-5 * np.abs(want).max())
  with pytest.raises(TypeError, match="draft must be a SharedEncoderDraft"):
    grow.grow_shared_encoder_draft(small, big)
  with pytest.raises(ValueError, match="not a multiple"):
    grow.grow_shared_encoder_draft(draft, big.replace(config=TINY.replace(emb_dim=24)))
  with pytest.raises(ValueError, match="noise must be >= 0"):
    grow.grow_shared_encoder_draft(draft, big, noise=-1e-3)


def test_grow_model_script(tmp_path, capsys):
  from conftest import load_script  # pylint: disable=g-import-not-at-top
  from specdec import load_model  # pylint: disable=g-import-not-at-top
  config = TINY.replace(head_dim=64)  # The preset's (t5_1_1_small) head_dim: it cannot grow.
  T5Model.init(config, 0).save(str(tmp_path / "small"))
  shape = [f"--{k}={getattr(BIG, k)}" for k in ("emb_dim", "num_heads", "mlp_dim",
                                                "num_encoder_layers", "num_decoder_layers")]
  load_script("grow_model").main([f"--model={tmp_path / 'small'}", f"--out={tmp_path / 'big'}",
                                  *shape])
  assert "max |logit difference|" in capsys.readouterr().out
  big = load_model(str(tmp_path / "big"))
  assert big.config == BIG.replace(head_dim=64)  # Vocabulary, dtype, dropout: the model's.
  with pytest.raises(SystemExit):
    load_script("grow_model").main([f"--model={tmp_path / 'small'}", f"--out={tmp_path / 'x'}",
                                    f"--draft={tmp_path / 'small'}"])  # --draft needs --draft_out.
