"""`T5Model.from_hf` on every layout `save_pretrained` writes: one file or shards plus an index,
safetensors or torch `.bin`; and the errors that name a missing shard, index or file."""

import json
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from specdec import T5Model, hf_import  # noqa: E402

_SHARD = "40KB"  # The tiny model has ~250 KB of float32 weights: several shards.


def _hf_model(*, tied: bool):
  torch.manual_seed(1 if tied else 2)
  config = transformers.T5Config(
      vocab_size=64, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
      num_decoder_layers=3, dropout_rate=0.0, feed_forward_proj="relu" if tied else "gated-gelu",
      tie_word_embeddings=tied, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  model = transformers.T5ForConditionalGeneration(config).eval()
  with torch.no_grad():  # HF initialises the norms to 1: make them tell layers apart.
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.uniform_(0.5, 1.5)
  return model


@pytest.fixture(scope="module", params=["untied", "tied"])
def saved(request, tmp_path_factory):
  """{layout: directory} for one model, and the unsharded safetensors load as the reference."""
  model = _hf_model(tied=request.param == "tied")
  root = tmp_path_factory.mktemp(request.param)
  dirs = {}
  for layout, kwargs in {
      "safetensors": dict(safe_serialization=True),
      "safetensors_sharded": dict(safe_serialization=True, max_shard_size=_SHARD),
      "bin": dict(safe_serialization=False),
      "bin_sharded": dict(safe_serialization=False, max_shard_size=_SHARD),
  }.items():
    dirs[layout] = str(root / layout)
    model.save_pretrained(dirs[layout], **kwargs)
  return model, dirs, hf_import.load(dirs["safetensors"])


def _assert_same_tree(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      _assert_same_tree(a[key], b[key])
    else:
      assert a[key].dtype == b[key].dtype == np.float32
      np.testing.assert_array_equal(a[key], b[key])


def _shards(path, suffix):
  return sorted(n for n in os.listdir(path) if n.endswith(suffix) and "-of-" in n)


def test_layouts_on_disk(saved):
  _, dirs, _ = saved
  assert os.listdir(dirs["safetensors"]).count("model.safetensors") == 1
  assert os.path.isfile(os.path.join(dirs["bin"], "pytorch_model.bin"))
  assert len(_shards(dirs["safetensors_sharded"], ".safetensors")) >= 3
  assert os.path.isfile(os.path.join(dirs["safetensors_sharded"], "model.safetensors.index.json"))
  assert len(_shards(dirs["bin_sharded"], ".bin")) >= 3
  assert os.path.isfile(os.path.join(dirs["bin_sharded"], "pytorch_model.bin.index.json"))


@pytest.mark.parametrize("layout", ["safetensors_sharded", "bin", "bin_sharded"])
def test_every_layout_loads_the_same_parameters(saved, layout):
  _, dirs, (config, params) = saved
  other_config, other_params = hf_import.load(dirs[layout])
  assert other_config == config
  _assert_same_tree(other_params, params)


def test_parameters_are_the_hf_weights(saved):
  model, dirs, (config, params) = saved
  state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  np.testing.assert_array_equal(params["token_embedder"]["embedding"], state["shared.weight"])
  np.testing.assert_array_equal(params["decoder"]["layers_2"]["mlp"]["wo"]["kernel"],
                                state["decoder.block.2.layer.2.DenseReluDense.wo.weight"].T)
  assert config.logits_via_embedding == model.config.tie_word_embeddings
  # And through T5Model (the parameter check included).
  loaded = T5Model.from_hf(dirs["safetensors_sharded"])
  assert loaded.config == config


def test_bfloat16_shards(tmp_path):
  model = _hf_model(tied=False).to(torch.bfloat16)
  model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="20KB")
  assert len(_shards(tmp_path, ".safetensors")) >= 3
  _, params = hf_import.load(str(tmp_path))
  expected = model.state_dict()["encoder.block.1.layer.0.SelfAttention.q.weight"].float().numpy()
  got = params["encoder"]["layers_1"]["attention"]["query"]["kernel"]
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, expected.T)  # bfloat16 → float32 is exact.


def _copy(src, dest):
  os.makedirs(dest)
  for name in os.listdir(src):
    with open(os.path.join(src, name), "rb") as f, open(os.path.join(dest, name), "wb") as g:
      g.write(f.read())
  return dest


@pytest.mark.parametrize("layout,index,suffix", [
    ("safetensors_sharded", "model.safetensors.index.json", ".safetensors"),
    ("bin_sharded", "pytorch_model.bin.index.json", ".bin"),
])
def test_missing_shard_or_index_is_named(saved, tmp_path, layout, index, suffix):
  _, dirs, _ = saved
  path = _copy(dirs[layout], tmp_path / "copy")
  shard = _shards(path, suffix)[1]
  os.remove(os.path.join(path, shard))
  with pytest.raises(ValueError, match=rf"Missing shard\(s\) of .*{index}: .*{shard}"):
    T5Model.from_hf(path)
  os.remove(os.path.join(path, index))
  with pytest.raises(ValueError, match=rf"holds sharded weights .* but not their index "
                                       rf".*{index}"):
    T5Model.from_hf(path)


def test_shard_index_that_lies(saved, tmp_path):
  _, dirs, _ = saved
  path = _copy(dirs["safetensors_sharded"], tmp_path / "copy")
  index_path = os.path.join(path, "model.safetensors.index.json")
  with open(index_path) as f:
    index = json.load(f)
  name = "encoder.final_layer_norm.weight"
  wrong = next(s for s in _shards(path, ".safetensors") if s != index["weight_map"][name])
  index["weight_map"][name] = wrong
  with open(index_path, "w") as f:
    json.dump(index, f)
  with pytest.raises(ValueError, match=rf"{wrong} lacks {name}, which its shard index places"):
    hf_import.load(path)
  with open(index_path, "w") as f:
    f.write("{not json")
  with pytest.raises(ValueError, match="Corrupt shard index .*model.safetensors.index.json"):
    hf_import.load(path)


def test_corrupt_safetensors_file_is_named(saved, tmp_path):
  _, dirs, _ = saved
  path = _copy(dirs["safetensors"], tmp_path / "copy")
  file = os.path.join(path, "model.safetensors")
  with open(file, "r+b") as f:
    f.truncate(os.path.getsize(file) // 2)
  with pytest.raises(ValueError, match=r"Corrupt safetensors file .*model\.safetensors"):
    hf_import.load(path)


def test_bin_without_torch_says_so(saved, monkeypatch):
  _, dirs, _ = saved
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError.
  with pytest.raises(ValueError, match=r"pytorch_model-.*\.bin needs torch"):
    hf_import.load(dirs["bin_sharded"])
