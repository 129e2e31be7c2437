"""Tests for `specdec.SharedEncoderDraft`: exactness, greedy identity, one encoder pass, I/O, errors.

The χ² cases mirror tests/test_speculative.py (same N, V, length, samplings and threshold; the law
is enumerated by `specdec.testing.exact_joint` in float64 numpy).
"""

import json
import os
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import network
from specdec.shared_encoder import BoundDraft, SharedEncoderConfig, SharedEncoderDraft
from specdec.testing import SMALL, SMALL_DRAFT, TINY, TINY_DRAFT, chi2_pvalue, exact_joint

N = 20000
LENGTH = 3
P_MIN = 1e-4  # As in test_speculative: ~1e-4 per deterministic case under a correct sampler.
PROMPT = [3, 5, 2, 7, 4]
SAMPLINGS = {"T=1": (1.0, 0, 1.0), "T=0.7": (0.7, 0, 1.0), "top_k=3": (1.0, 3, 1.0),
             "top_p=0.75": (1.0, 0, 0.75)}


@pytest.fixture(scope="module")
def small_pair():
  target = specdec.T5Model.init(SMALL, 0)
  # Narrower than the target and random: wrong often enough for the test to mean something.
  config = SharedEncoderConfig.for_target(SMALL, emb_dim=8, head_dim=4, mlp_dim=12)
  return target, SharedEncoderDraft.from_target(target, config, rng=3)


def draft_joint(target, draft, temperature, top_k, top_p):
  """The draft's own sequence law (teacher forcing over the target's encoding)."""
  bound = _TeacherForced(target, draft)
  return exact_joint(bound, PROMPT, length=LENGTH, temperature=temperature, top_k=top_k,
                     top_p=top_p)


class _TeacherForced:
  """`exact_joint` needs `.vocab_size` and `.logits(enc, dec)`."""

  def __init__(self, target, draft):
    self.target, self.draft, self.vocab_size = target, draft, draft.vocab_size

  def logits(self, enc, dec):
    return self.draft.logits(self.target, enc, dec)


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_exactness(small_pair, name, gamma):
  target, draft = small_pair
  temperature, top_k, top_p = SAMPLINGS[name]
  joint = exact_joint(target, PROMPT, length=LENGTH, temperature=temperature, top_k=top_k,
                      top_p=top_p)
  assert 0.5 * np.abs(joint - draft_joint(target, draft, *SAMPLINGS[name])).sum() > 0.2
  enc = jnp.tile(jnp.asarray([PROMPT], jnp.int32), (N, 1))
  result = specdec.speculative_generate(
      target, draft, enc, gamma=gamma, max_decode_len=LENGTH, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=jax.random.PRNGKey(1000 + 10 * gamma + len(name)),
      eos_id=None)
  tokens = np.asarray(result.tokens)
  counts = np.bincount(np.ravel_multi_index(tuple(tokens.T), (SMALL.vocab_size,) * LENGTH),
                       minlength=SMALL.vocab_size ** LENGTH)
  pvalue = chi2_pvalue(counts, joint)
  assert pvalue > P_MIN, f"{name}, gamma={gamma}: p-value {pvalue:.3g}"
  # The same statistic rejects the draft's own law (drafting without verification).
  assert chi2_pvalue(counts, draft_joint(target, draft, *SAMPLINGS[name])) < 1e-10


# --- greedy identity, rows, call counts ------------------------------------------------------

BATCH, SEQ, MAX_LEN = 16, 8, 12


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(5)
  lengths = rng.integers(1, SEQ + 1, BATCH)
  enc = rng.integers(2, 32, (BATCH, SEQ))
  enc[np.arange(SEQ)[None, :] >= lengths[:, None]] = 0
  return jnp.asarray(enc, jnp.int32)


@pytest.fixture(scope="module")
def tiny_shared(tiny_target):
  return SharedEncoderDraft.from_target(tiny_target, rng=1)  # One target-shaped layer.


@pytest.mark.parametrize("gamma", [1, 3])
def test_greedy_identity(tiny_target, tiny_shared, prompts, gamma):
  want = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                     eos_id=5).tokens)
  result = specdec.speculative_generate(tiny_target, tiny_shared, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=5)
  np.testing.assert_array_equal(np.asarray(result.tokens), want)
  s = result.stats
  np.testing.assert_array_equal(s.drafted, gamma * np.asarray(s.target_calls))


def test_copy_of_the_whole_target_decoder_is_always_right(tiny_target, prompts):
  """With every target decoder layer copied, the draft is the target's decoder over the target's
  encoder output: each proposal is accepted (a check of `from_target` and of the shared
  encoding as much as of the loop)."""
  config = SharedEncoderConfig.for_target(TINY, num_layers=TINY.num_decoder_layers)
  draft = SharedEncoderDraft.from_target(tiny_target, config)
  result = specdec.speculative_generate(tiny_target, draft, prompts, gamma=3,
                                        max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(result.stats.accepted, result.stats.drafted)
  want = specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN, eos_id=None).tokens
  np.testing.assert_array_equal(np.asarray(result.tokens), np.asarray(want))


def test_rows_are_independent_of_the_batch(tiny_target, tiny_shared, prompts):
  def run(enc):
    return np.asarray(specdec.speculative_generate(
        tiny_target, tiny_shared, enc, gamma=3, max_decode_len=MAX_LEN, temperature=1.0,
        rng=jax.random.PRNGKey(0), eos_id=1).tokens)

  base = run(prompts)
  others = np.asarray(prompts).copy()
  others[4:] = np.roll(others[4:], 3, axis=0)
  others[4:, 0] = (others[4:, 0] + 5) % 30 + 2
  changed = run(jnp.asarray(others))
  np.testing.assert_array_equal(changed[:4], base[:4])
  assert (changed[4:] != base[4:]).any()


def test_target_encoder_runs_once_per_call(tiny_target, tiny_draft, tiny_shared, prompts):
  """Counted under `jax.disable_jit()`: every execution of an encoder stack, anywhere."""
  calls = []
  original = network.Encoder.__call__

  def counting(self, *args, **kwargs):
    calls.append(self.config.emb_dim)
    return original(self, *args, **kwargs)

  def encoder_runs(draft):
    calls.clear()
    with jax.disable_jit(), mock.patch.object(network.Encoder, "__call__", counting):
      specdec.speculative_generate(tiny_target, draft, prompts[:2], gamma=2, max_decode_len=3)
    return list(calls)

  assert encoder_runs(tiny_shared) == [TINY.emb_dim]  # The target's, once.
  # The count can fail: a draft with its own encoder runs a second one.
  assert sorted(encoder_runs(tiny_draft)) == sorted([TINY.emb_dim, tiny_draft.config.emb_dim])


def test_cached_logits_match_teacher_forcing(tiny_target, tiny_shared, prompts):
  dec = jnp.concatenate([jnp.zeros((BATCH, 1), jnp.int32), prompts[:, :5]], axis=1)
  forced = tiny_shared.logits(tiny_target, prompts, dec)
  cache = tiny_shared.start_from_encoded(prompts, tiny_target.encode(prompts), cache_length=8)
  first, cache = tiny_shared.extend(cache, dec[:, :2])
  rest, cache = tiny_shared.extend(cache, dec[:, 2:])
  np.testing.assert_allclose(np.concatenate([first, rest], axis=1), forced, atol=1e-5)
  np.testing.assert_array_equal(cache.position, 6)


def test_bound_draft_is_a_plain_draft(tiny_target, tiny_shared, prompts):
  bound = tiny_shared.bind(tiny_target)
  assert isinstance(bound, BoundDraft) and isinstance(bound, specdec.Draft)
  out = np.asarray(specdec.generate(bound, prompts, max_decode_len=4, eos_id=None).tokens)
  # Greedy decoding by the draft alone is the argmax of its teacher-forced logits.
  dec = np.concatenate([np.zeros((BATCH, 1), np.int32), out[:, :3]], axis=1)
  forced = np.asarray(tiny_shared.logits(tiny_target, prompts, dec))
  np.testing.assert_array_equal(forced.argmax(-1), out)


# --- construction, save / load ---------------------------------------------------------------


def test_from_target_copies_what_it_says(tiny_target):
  config = SharedEncoderConfig.for_target(TINY)
  draft = SharedEncoderDraft.from_target(tiny_target, config, layers=(1,))
  t, d = tiny_target.params, draft.params
  for a, b in [(t["token_embedder"], d["token_embedder"]),
               (t["decoder"]["layers_1"], d["decoder"]["layers_0"]),
               (t["decoder"]["logits_dense"], d["decoder"]["logits_dense"])]:
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  assert draft.target_fingerprint == specdec.shared_encoder.encoder_fingerprint(tiny_target)
  assert draft.num_params == config.num_params
  narrow = SharedEncoderConfig.for_target(TINY, emb_dim=8, head_dim=4, mlp_dim=12)
  assert SharedEncoderDraft.from_target(tiny_target, narrow).num_params == narrow.num_params
  with pytest.raises(ValueError, match="layers"):
    SharedEncoderDraft.from_target(tiny_target, config, layers=(2,))
  with pytest.raises(ValueError, match="layers"):
    SharedEncoderDraft.from_target(tiny_target, narrow, layers=(0,))


def test_from_target_starts_from_a_small_drafts_decoder(tiny_target):
  """`decoder_source`: every leaf whose shape agrees comes from the small model's decoder (its
  one layer into both draft layers here); the cross keys/values, which read the target's wider
  encoder, stay fresh; the target's encoder is still what the draft belongs to."""
  small = specdec.T5Model.init(TINY_DRAFT.replace(mlp_activations=("gelu", "linear")), 5)
  config = SharedEncoderConfig.for_target(TINY, emb_dim=8, head_dim=4, mlp_dim=12, num_layers=2,
                                          logits_via_embedding=True)
  draft = SharedEncoderDraft.from_target(tiny_target, config, layers=(0, 0), decoder_source=small)
  fresh = SharedEncoderDraft.init(config, 0)
  s, d, f = small.params, draft.params, fresh.params
  np.testing.assert_array_equal(d["token_embedder"]["embedding"],
                                s["token_embedder"]["embedding"])
  for i in (0, 1):
    layer, source = d["decoder"][f"layers_{i}"], s["decoder"]["layers_0"]
    for name in ("self_attention", "mlp"):
      jax.tree_util.tree_map(np.testing.assert_array_equal, layer[name], source[name])
    cross = layer["encoder_decoder_attention"]
    np.testing.assert_array_equal(cross["query"]["kernel"],
                                  source["encoder_decoder_attention"]["query"]["kernel"])
    for name in ("key", "value"):
      assert cross[name]["kernel"].shape == (TINY.emb_dim, config.num_heads * config.head_dim)
      np.testing.assert_array_equal(
          cross[name]["kernel"], f["decoder"][f"layers_{i}"]["encoder_decoder_attention"][name][
              "kernel"])
  assert draft.target_fingerprint == specdec.shared_encoder.encoder_fingerprint(tiny_target)
  with pytest.raises(ValueError, match="decoder_source: vocabulary"):
    SharedEncoderDraft.from_target(tiny_target, config,
                                   decoder_source=specdec.T5Model.init(SMALL_DRAFT, 0))
  with pytest.raises(ValueError, match="layers must name 2"):
    SharedEncoderDraft.from_target(tiny_target, config, layers=(0, 1), decoder_source=small)


def test_save_load_roundtrip(tiny_target, tiny_shared, tmp_path):
  tiny_shared.save(str(tmp_path / "d"))
  loaded = specdec.load_model(str(tmp_path / "d"))
  assert isinstance(loaded, SharedEncoderDraft)
  assert loaded.config == tiny_shared.config
  assert loaded.target_fingerprint == tiny_shared.target_fingerprint
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded.params, tiny_shared.params)
  tiny_shared.save(str(tmp_path / "bf16"), weights="bfloat16")
  rounded = SharedEncoderDraft.load(str(tmp_path / "bf16"))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_array_equal(a, jnp.asarray(b, jnp.bfloat16).astype(
          jnp.float32)), rounded.params, tiny_shared.params)
  assert isinstance(specdec.load_model(_save_t5(tiny_target, tmp_path)), specdec.T5Model)


def _save_t5(model, tmp_path):
  path = str(tmp_path / "t5")
  model.save(path)
  return path


def test_checkpoint_errors_name_the_file(tiny_shared, tmp_path):
  with pytest.raises(ValueError, match="config.json"):
    SharedEncoderDraft.load(str(tmp_path / "missing"))
  path = tmp_path / "d"
  tiny_shared.save(str(path))
  with pytest.raises(ValueError, match="specdec.load_model"):
    specdec.T5Model.load(str(path))
  (path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="config.json"):
    specdec.load_model(str(path))
  (path / "config.json").write_text(json.dumps({"kind": "something_else"}))
  with pytest.raises(ValueError, match="unknown model kind"):
    specdec.load_model(str(path))
  (path / "config.json").write_text(json.dumps({"kind": "shared_encoder_draft",
                                                "config": {"vocab_size": 32}}))
  with pytest.raises(ValueError, match="config.json"):
    SharedEncoderDraft.load(str(path))
  tiny_shared.save(str(tmp_path / "e"))
  for name in os.listdir(tmp_path / "e" / "params"):
    target = tmp_path / "e" / "params" / name
    if target.is_file():
      target.write_bytes(b"garbage")
  with pytest.raises(ValueError, match="params"):
    SharedEncoderDraft.load(str(tmp_path / "e"))


# --- bad input -------------------------------------------------------------------------------


def test_mismatched_target_is_a_value_error_naming_both_sides(tiny_target, tiny_shared,
                                                             prompts):
  run = lambda target, draft: specdec.speculative_generate(target, draft, prompts, gamma=2,
                                                           max_decode_len=4)
  wider = specdec.T5Model.init(TINY.replace(emb_dim=24), 0)
  with pytest.raises(ValueError, match=r"draft.config.encoder_dim.*target.config.emb_dim"):
    run(wider, tiny_shared)
  other_vocab = specdec.T5Model.init(TINY.replace(vocab_size=40), 0)
  with pytest.raises(ValueError, match=r"draft.vocab_size=32, target.vocab_size=40"):
    run(other_vocab, tiny_shared)
  retrained = specdec.T5Model.init(TINY, 7)  # Same shapes, other weights.
  with pytest.raises(ValueError, match="fingerprint"):
    run(retrained, tiny_shared)
  run(retrained, tiny_shared.replace(target_fingerprint=None))  # The documented way out.
  with pytest.raises(TypeError, match="encoder"):
    run(specdec.UnigramDraft(log_probs=jnp.zeros(32)), tiny_shared)
  with pytest.raises(TypeError, match="bind"):
    specdec.generate(tiny_shared, prompts, max_decode_len=4)
  with pytest.raises(ValueError, match="encoded"):
    tiny_shared.start_from_encoded(prompts, jnp.zeros((BATCH, SEQ, 24)), cache_length=8)


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(encoder_dim=0), ValueError, "encoder_dim"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers=1.0), TypeError, "num_layers"),
    (dict(emb_dim=-1), ValueError, "SharedEncoderConfig.emb_dim"),
    (dict(mlp_activations=("tanh",)), ValueError, "SharedEncoderConfig.mlp_activations"),
    (dict(dtype="int8"), ValueError, "SharedEncoderConfig.dtype"),
])
def test_bad_config(kwargs, error, name):
  with pytest.raises(error, match=name):
    SharedEncoderConfig.for_target(TINY, **kwargs)
  with pytest.raises(TypeError, match="unknown field"):
    SharedEncoderConfig.for_target(TINY, num_decoder_layers=2)
