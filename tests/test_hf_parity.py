"""Parity with the reference implementation: random small Hugging Face T5 models (built from
configs, no hub) converted with `T5Model.from_hf` give transformers' logits and greedy tokens.
"""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

import specdec  # noqa: E402
from specdec import T5Model  # noqa: E402

_VOCAB = 64
_ATOL = 1e-4  # float32 logits of the same weights, summed in different orders.
_DECODE_LEN = 30

# Six rows of different (padded) lengths; 0 = padding, ids 2.. are ordinary tokens.
_ENCODER = np.array([
    [5, 9, 3, 12, 7, 30, 4, 8, 44, 61],
    [11, 2, 40, 0, 0, 0, 0, 0, 0, 0],
    [6, 6, 6, 25, 17, 50, 63, 0, 0, 0],
    [31, 14, 22, 19, 2, 8, 13, 55, 9, 0],
    [7, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [18, 27, 36, 45, 54, 63, 10, 20, 0, 0],
], np.int32)


def _hf_config(version: str) -> "transformers.T5Config":
  v10 = version == "v1_0"
  return transformers.T5Config(
      vocab_size=_VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
      num_decoder_layers=3, relative_attention_num_buckets=32,
      relative_attention_max_distance=128, dropout_rate=0.0,
      feed_forward_proj="relu" if v10 else "gated-gelu", tie_word_embeddings=v10,
      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


# (torch seed, factor on the decoder self-attention weights), chosen so that greedy outputs are
# varied while transformers' own float32 logits stay within ~1e-5 of its float64 logits.
_INIT = {"v1_0": (3, 2.0), "v1_1": (0, 1.5)}


def _hf_model(version: str):
  seed, self_attention_factor = _INIT[version]
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(_hf_config(version)).eval()
  # HF's initialisation makes a random T5 repeat one token forever, which would make the greedy
  # comparison weak; random norms, relative biases and stronger decoder self-attention give
  # varied outputs (and test that the norm scales and biases are converted). The untied head is
  # scaled down so the logits are O(5), like the tied v1.0 logits: 1e-4 is then ~10x float32 noise.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
      elif "relative_attention_bias" in name:
        p.normal_(0.0, 1.0)
      elif name.startswith("decoder") and "SelfAttention" in name:
        p.mul_(self_attention_factor)
      elif name == "lm_head.weight":
        p.mul_(0.3)
  return model


@pytest.fixture(scope="module", params=["v1_0", "v1_1"])
def hf_pair(request, tmp_path_factory):
  """(version, HF model, its save_pretrained directory (safetensors), the converted T5Model)."""
  version = request.param
  model = _hf_model(version)
  path = str(tmp_path_factory.mktemp(version))
  model.save_pretrained(path, safe_serialization=True)
  assert os.path.isfile(os.path.join(path, "model.safetensors"))
  return version, model, path, T5Model.from_hf(path)


@pytest.fixture(scope="module")
def hf_greedy_free(hf_pair):
  """transformers' greedy tokens `[6, _DECODE_LEN]` without EOS, for the fixture's model."""
  return _hf_greedy(hf_pair[1], _ENCODER, max_new_tokens=_DECODE_LEN, eos_token_id=None)


def _hf_logits(model, encoder, decoder):
  with torch.no_grad():
    return model(input_ids=torch.tensor(encoder, dtype=torch.long),
                 attention_mask=torch.tensor(encoder > 0),
                 decoder_input_ids=torch.tensor(decoder, dtype=torch.long)).logits.numpy()


def _hf_greedy(model, encoder, *, max_new_tokens, eos_token_id):
  kwargs = dict(min_new_tokens=max_new_tokens) if eos_token_id is None else {}
  with torch.no_grad():
    out = model.generate(
        input_ids=torch.tensor(encoder, dtype=torch.long),
        attention_mask=torch.tensor(encoder > 0), do_sample=False, num_beams=1,
        max_new_tokens=max_new_tokens, eos_token_id=eos_token_id, pad_token_id=0,
        decoder_start_token_id=0,
        # transformers 4.57 sizes its default cache by the *encoder* depth (num_layers) and fails
        # when num_decoder_layers is larger; an empty lazily-grown cache avoids that bug.
        past_key_values=transformers.EncoderDecoderCache(transformers.DynamicCache(),
                                                         transformers.DynamicCache()),
        **kwargs).numpy()
  assert (out[:, 0] == 0).all()  # HF prepends the decoder start token 0; T5X does not return it.
  return out[:, 1:]


def _decoder_inputs(seed, length):
  tokens = np.random.RandomState(seed).randint(2, _VOCAB, size=(len(_ENCODER), length))
  tokens[:, 0] = 0
  return tokens.astype(np.int32)


def test_converted_config(hf_pair):
  version, hf, _, ours = hf_pair
  c = ours.config
  assert (c.vocab_size, c.emb_dim, c.num_heads, c.head_dim, c.mlp_dim) == (_VOCAB, 32, 4, 8, 48)
  assert (c.num_encoder_layers, c.num_decoder_layers) == (2, 3)
  assert c.dtype == "float32"
  if version == "v1_0":
    assert c.mlp_activations == ("relu",) and c.logits_via_embedding
  else:
    assert c.mlp_activations == ("gelu", "linear") and not c.logits_via_embedding
  assert ours.num_params == c.num_params == hf.num_parameters()


def test_logits_match_transformers(hf_pair):
  _, hf, _, ours = hf_pair
  # 140 decoder positions: beyond relative_attention_max_distance (128), so the clipped buckets
  # are exercised too.
  decoder = _decoder_inputs(0, 140)
  expected = _hf_logits(hf, _ENCODER, decoder)
  got = np.asarray(ours.logits(_ENCODER, decoder))
  assert got.dtype == np.float32
  assert np.abs(expected).max() > 1.0  # Not a vacuous comparison of near-zero logits.
  np.testing.assert_allclose(got, expected, atol=_ATOL, rtol=0)


def test_greedy_generate_matches_transformers(hf_pair, hf_greedy_free):
  ours, expected = hf_pair[3], hf_greedy_free
  got = np.asarray(specdec.generate(ours, _ENCODER, max_decode_len=_DECODE_LEN, eos_id=None).tokens)
  assert got.shape == expected.shape == (len(_ENCODER), _DECODE_LEN)
  # The outputs are varied enough for the comparison to mean something.
  assert len(np.unique(expected)) >= 6
  np.testing.assert_array_equal(got, expected)


def test_greedy_generate_with_eos_matches_transformers(hf_pair, hf_greedy_free):
  _, hf, _, ours = hf_pair
  # An EOS id that row 0 produces mid-way, so at least one row stops early.
  eos = int(hf_greedy_free[0, _DECODE_LEN // 3])
  expected = _hf_greedy(hf, _ENCODER, max_new_tokens=_DECODE_LEN, eos_token_id=eos)
  got = np.asarray(specdec.generate(ours, _ENCODER, max_decode_len=_DECODE_LEN, eos_id=eos).tokens)
  # HF stops once every row has ended (and pads finished rows with 0); specdec keeps the shape.
  np.testing.assert_array_equal(got[:, :expected.shape[1]], expected)
  np.testing.assert_array_equal(got[:, expected.shape[1]:], 0)
  assert (got == eos).sum(axis=1).max() == 1 and (got[0] == eos).any()


def test_pytorch_model_bin(tmp_path):
  hf = _hf_model("v1_1")
  hf.save_pretrained(str(tmp_path), safe_serialization=False)
  assert os.path.isfile(tmp_path / "pytorch_model.bin")
  assert not os.path.exists(tmp_path / "model.safetensors")
  ours = T5Model.from_hf(str(tmp_path))
  assert not ours.config.logits_via_embedding
  decoder = _decoder_inputs(1, 12)
  np.testing.assert_allclose(ours.logits(_ENCODER, decoder), _hf_logits(hf, _ENCODER, decoder),
                             atol=_ATOL, rtol=0)


def _write_dir(path, config: dict, tensors: dict):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                              os.path.join(path, "model.safetensors"))


def _state(model):
  return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_tying_from_weights_not_config(tmp_path):
  """Saved configs lie about tying: the weights decide."""
  v10, v11 = _hf_model("v1_0"), _hf_model("v1_1")
  decoder = _decoder_inputs(2, 12)

  # Config says tied, there is no lm_head tensor: tied (v1.0).
  state = {k: v for k, v in _state(v10).items() if k != "lm_head.weight"}
  _write_dir(tmp_path / "tied", _hf_config("v1_0").to_dict(), state)
  tied = T5Model.from_hf(str(tmp_path / "tied"))
  assert tied.config.logits_via_embedding
  np.testing.assert_allclose(tied.logits(_ENCODER, decoder), _hf_logits(v10, _ENCODER, decoder),
                             atol=_ATOL, rtol=0)

  # Config lacks tie_word_embeddings (HF's default is True) but the lm_head differs from the
  # embedding: untied (v1.1). transformers itself would tie here; the v1.1 model is the truth.
  config = _hf_config("v1_1").to_dict()
  del config["tie_word_embeddings"]
  state = _state(v11)
  assert not np.array_equal(state["lm_head.weight"], state["shared.weight"])
  _write_dir(tmp_path / "untied", config, state)
  untied = T5Model.from_hf(str(tmp_path / "untied"))
  assert not untied.config.logits_via_embedding
  np.testing.assert_allclose(untied.logits(_ENCODER, decoder),
                             _hf_logits(v11, _ENCODER, decoder), atol=_ATOL, rtol=0)


def _saved_dir(tmp_path):
  path = tmp_path / "model"
  _hf_model("v1_1").save_pretrained(str(path), safe_serialization=True)
  return path


def test_missing_config_names_file(tmp_path):
  path = _saved_dir(tmp_path)
  os.remove(path / "config.json")
  with pytest.raises(ValueError, match="config.json"):
    T5Model.from_hf(str(path))


def test_missing_weights_names_files(tmp_path):
  path = _saved_dir(tmp_path)
  os.remove(path / "model.safetensors")
  with pytest.raises(ValueError, match="model.safetensors"):
    T5Model.from_hf(str(path))
  with pytest.raises(ValueError, match="pytorch_model.bin"):
    T5Model.from_hf(str(path))


def test_missing_directory(tmp_path):
  with pytest.raises(ValueError, match="config.json"):
    T5Model.from_hf(str(tmp_path / "nowhere"))


def test_non_t5_config(tmp_path):
  path = _saved_dir(tmp_path)
  config = json.loads((path / "config.json").read_text())
  config["model_type"] = "bert"
  (path / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match="bert"):
    T5Model.from_hf(str(path))


def test_corrupt_config(tmp_path):
  path = _saved_dir(tmp_path)
  (path / "config.json").write_text("{truncated")
  with pytest.raises(ValueError, match="config.json"):
    T5Model.from_hf(str(path))


def test_missing_tensor_named(tmp_path):
  path = tmp_path / "model"
  state = _state(_hf_model("v1_1"))
  del state["decoder.block.2.layer.1.EncDecAttention.k.weight"]
  _write_dir(path, _hf_config("v1_1").to_dict(), state)
  with pytest.raises(ValueError, match=r"decoder\.block\.2\.layer\.1\.EncDecAttention\.k"):
    T5Model.from_hf(str(path))

