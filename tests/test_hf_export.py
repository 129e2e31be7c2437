"""`specdec.hf_export` is the inverse of `T5Model.from_hf`, and the exported transformers model
computes what specdec computes (the peer comparison in scripts/compare_hf.py relies on both)."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from specdec import T5Config, T5Model, hf_export  # noqa: E402
from specdec.model import abstract_params  # noqa: E402

_ATOL = 1e-4  # float32 logits of the same weights, summed in different orders.
_BASE = T5Config(vocab_size=48, emb_dim=16, num_heads=2, num_encoder_layers=2,
                 num_decoder_layers=3, head_dim=8, mlp_dim=24, relative_attention_num_buckets=8,
                 relative_attention_max_distance=16)
# The two exportable T5 variants, crossed over so that tying and activation vary independently:
# the shipped draft is gated-GELU with tied embeddings, the target gated-GELU untied.
_VARIANTS = {
    "gated_gelu_tied": _BASE.replace(mlp_activations=("gelu", "linear"),
                                     logits_via_embedding=True),
    "relu_untied": _BASE.replace(mlp_activations=("relu",), logits_via_embedding=False),
}
_ENCODER = np.array([[5, 9, 3, 12, 7, 30, 4, 1], [11, 2, 40, 1, 0, 0, 0, 0]], np.int32)


def _random_model(config, seed):
  """T5X init has unit norm scales; random ones (and random everything) make a swapped or
  mis-transposed tensor show up in the logits."""
  leaves, treedef = jax.tree_util.tree_flatten(abstract_params(config))  # Shapes only.
  rs = np.random.RandomState(seed)
  leaves = [rs.uniform(0.5, 1.5, x.shape) if x.ndim == 1 else rs.normal(0, 0.5, x.shape)
            for x in leaves]
  return T5Model.from_params(config, jax.tree_util.tree_unflatten(treedef, leaves))


@pytest.fixture(scope="module", params=sorted(_VARIANTS))
def exported(request, tmp_path_factory):
  """(specdec model, its save_hf directory)."""
  model = _random_model(_VARIANTS[request.param], seed=len(request.param))
  path = str(tmp_path_factory.mktemp(request.param))
  assert hf_export.save_hf(model, path) == path
  return model, path


def test_round_trip_gives_identical_params(exported):
  model, path = exported
  back = T5Model.from_hf(path)
  assert back.config == model.config
  flat = lambda p: {jax.tree_util.keystr(k): v for k, v in  # noqa: E731
                    jax.tree_util.tree_flatten_with_path(p)[0]}
  ours, theirs = flat(model.params), flat(back.params)
  assert set(ours) == set(theirs)
  for name in ours:
    np.testing.assert_array_equal(np.asarray(theirs[name]), np.asarray(ours[name]), err_msg=name)


def test_hf_config(exported):
  model, _ = exported
  hf = hf_export.to_hf(model)
  assert not hf.training
  assert next(hf.parameters()).dtype == torch.float32
  c = hf.config
  assert c.tie_word_embeddings == model.config.logits_via_embedding
  assert c.feed_forward_proj == ("gated-gelu" if len(model.config.mlp_activations) == 2
                                 else "relu")
  assert (c.d_model, c.d_kv, c.d_ff, c.num_heads, c.vocab_size) == (16, 8, 24, 2, 48)
  assert (c.num_layers, c.num_decoder_layers) == (2, 3)
  assert (c.relative_attention_num_buckets, c.relative_attention_max_distance) == (8, 16)
  assert (c.decoder_start_token_id, c.pad_token_id, c.eos_token_id) == (0, 0, 1)
  assert c.dropout_rate == 0.0
  assert hf.num_parameters() == model.num_params
  if c.tie_word_embeddings:
    assert hf.lm_head.weight.data_ptr() == hf.shared.weight.data_ptr()


def _hf_logits(hf, decoder):
  with torch.no_grad():
    return hf(input_ids=torch.tensor(_ENCODER, dtype=torch.long),
              attention_mask=torch.tensor(_ENCODER > 0),
              decoder_input_ids=torch.tensor(decoder, dtype=torch.long)).logits.numpy()


def test_exported_logits_match_specdec(exported):
  model, path = exported
  # 24 decoder positions: past relative_attention_max_distance (16), so clipped buckets count.
  decoder = np.random.RandomState(0).randint(2, 48, size=(2, 24)).astype(np.int32)
  decoder[:, 0] = 0
  expected = np.asarray(model.logits(_ENCODER, decoder))
  assert np.abs(expected).max() > 1.0  # Not a vacuous comparison of near-zero logits.
  np.testing.assert_allclose(_hf_logits(hf_export.to_hf(model), decoder), expected,
                             atol=_ATOL, rtol=0)
  # What save_hf wrote loads in transformers itself (a tied model's lm_head is re-tied).
  reloaded = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
  np.testing.assert_allclose(_hf_logits(reloaded, decoder), expected, atol=_ATOL, rtol=0)


def test_unexportable_activation_is_named():
  # The config alone decides (no parameters needed, nothing compiled).
  model = T5Model(config=_BASE.replace(mlp_activations=("silu", "linear")), params={})
  with pytest.raises(ValueError, match=r"mlp_activations=\('silu', 'linear'\)"):
    hf_export.to_hf(model)


def test_bad_arguments():
  with pytest.raises(TypeError, match="model must be a specdec.T5Model"):
    hf_export.to_hf({"params": {}})
  model = T5Model(config=_VARIANTS["relu_untied"], params={})
  with pytest.raises(TypeError, match="path"):
    hf_export.save_hf(model, None)


def test_compare_hf_script_runs_on_a_stand_in_pair(tmp_path):
  """scripts/compare_hf.py end to end on tiny random models over the shipped 4k vocabulary, with
  the shipped pair's layout (untied gated-GELU target; a shared-encoder `draft`, which
  transformers' assisted generation cannot take, and a tied gated-GELU T5 `draft_small`, which it
  gets). Checks plumbing and the equality check, not timings."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  target = T5Config(vocab_size=4096, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
                    num_encoder_layers=1, num_decoder_layers=1)
  draft = target.replace(emb_dim=8, logits_via_embedding=True)
  _random_model(target, 0).save(str(tmp_path / "ckpt" / "ende" / "target"))
  _random_model(draft, 1).save(str(tmp_path / "ckpt" / "ende" / "draft_small"))
  from specdec.shared_encoder import (  # pylint: disable=g-import-not-at-top
      SharedEncoderConfig, SharedEncoderDraft)
  SharedEncoderDraft.from_target(
      T5Model.load(str(tmp_path / "ckpt" / "ende" / "target")),
      SharedEncoderConfig.for_target(target, emb_dim=8), rng=2).save(
          str(tmp_path / "ckpt" / "ende" / "draft"))
  output = tmp_path / "compare.json"
  env = dict(os.environ, SPECDEC_CHECKPOINT_DIR=str(tmp_path / "ckpt"), JAX_PLATFORMS="cpu",
             TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, os.path.join(repo, "scripts", "compare_hf.py"), "--num_sentences=2",
       "--max_decode_len=6", "--input_len=32", "--repeats=1", "--gamma=2", "--cpus=1",
       f"--output={output}"],
      capture_output=True, text=True, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert "greedy outputs identical across all 5 methods: True" in proc.stdout
  assert "| specdec speculative, shared-encoder draft (γ=2) |" in proc.stdout
  assert "| transformers assisted (K=2) |" in proc.stdout
  with open(output) as f:
    report = json.load(f)
  assert report["identical_outputs"] and report["num_sentences"] == 2
  assert set(report["summary"]) == {"hf_greedy", "hf_assisted", "specdec_greedy", "specdec_spec",
                                    "specdec_shared"}
  assert report["draft_params"] == _random_model(draft, 1).num_params
  assert report["summary"]["specdec_shared"]["draft_calls"] > 0
  for row in report["per_prompt"]:
    assert len(set(row["tokens"].values())) == 1 and 1 <= row["tokens"]["hf_greedy"] <= 6
    assert row["calls"]["hf_greedy"]["target_calls"] == row["tokens"]["hf_greedy"]
    assert row["calls"]["hf_assisted"]["draft_calls"] > 0


@pytest.mark.parametrize("config", [
    T5Config(vocab_size=32, emb_dim=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=3,
             head_dim=8, mlp_dim=24, mlp_activations=("gelu", "linear"),
             logits_via_embedding=False),
    T5Config(vocab_size=32, emb_dim=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
             head_dim=8, mlp_dim=24, mlp_activations=("relu",), logits_via_embedding=True),
], ids=["v1_1_untied", "v1_0_tied"])
def test_name_map_covers_every_parameter_once(config):
  from specdec import hf_names  # pylint: disable=g-import-not-at-top
  entries = hf_names.name_map(config)
  paths = [path for path, _, _ in entries]
  hf = [name for _, name, _ in entries]
  assert len(set(paths)) == len(paths) and len(set(hf)) == len(hf)
  leaves = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
  ours = {tuple(k.key for k in key) for key, _ in leaves}
  assert set(paths) == ours
  assert ("lm_head.weight" in hf) == (not config.logits_via_embedding)
