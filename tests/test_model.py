"""T5Model and its decoder cache: block writes, per-row positions, rollback; save/load; params.

The cache tests compare every logit the cache produces with teacher forcing (`model.logits`) on the
sequence the row holds at that moment. Teacher forcing is causal, so one `[N, L]` call scores the
prefixes of many schedule steps at once (tokens past a step's prefix cannot affect its logits).
"""

import json
import os

import jax
import numpy as np
import pytest

from conftest import TINY, TINY_DRAFT
from specdec import DecoderCache, T5Model
from specdec import model as model_lib

_ATOL = 1e-5
_CACHE_LENGTH = 16

# Four rows with encoder inputs of different lengths (0 = padding).
_ENCODER = np.array([
    [5, 9, 3, 12, 7, 30, 4, 8],
    [11, 2, 0, 0, 0, 0, 0, 0],
    [6, 6, 6, 25, 17, 0, 0, 0],
    [31, 14, 22, 19, 2, 8, 13, 0],
], np.int32)


def _random_decoder_tokens(rng, batch, length, vocab_size):
  tokens = rng.randint(2, vocab_size, size=(batch, length)).astype(np.int32)
  tokens[:, 0] = 0  # T5X: the decoder starts from 0.
  return tokens


def test_one_token_at_a_time_matches_teacher_forcing(tiny_target):
  rng = np.random.RandomState(0)
  length = 10
  decoder = _random_decoder_tokens(rng, len(_ENCODER), length, TINY.vocab_size)
  expected = np.asarray(tiny_target.logits(_ENCODER, decoder))
  assert expected.shape == (len(_ENCODER), length, TINY.vocab_size)
  assert expected.dtype == np.float32

  cache = tiny_target.start(_ENCODER, cache_length=_CACHE_LENGTH)
  assert isinstance(cache, DecoderCache)
  assert cache.length == _CACHE_LENGTH
  np.testing.assert_array_equal(cache.position, 0)
  for t in range(length):
    logits, cache = tiny_target.extend(cache, decoder[:, t:t + 1])
    assert logits.shape == (len(_ENCODER), 1, TINY.vocab_size)
    np.testing.assert_array_equal(cache.position, t + 1)
    for b in range(len(_ENCODER)):
      np.testing.assert_allclose(logits[b, 0], expected[b, t], atol=_ATOL, rtol=0,
                                 err_msg=f"row {b}, position {t}")


def test_whole_block_matches_teacher_forcing(tiny_target):
  rng = np.random.RandomState(1)
  decoder = _random_decoder_tokens(rng, len(_ENCODER), 4, TINY.vocab_size)
  expected = np.asarray(tiny_target.logits(_ENCODER, decoder))
  cache = tiny_target.start(_ENCODER, cache_length=_CACHE_LENGTH)
  logits, cache = tiny_target.extend(cache, decoder)
  np.testing.assert_allclose(logits, expected, atol=_ATOL, rtol=0)
  np.testing.assert_array_equal(cache.position, 4)


def _run_schedule(model, encoder, seed, *, steps, max_block):
  """Random blocks and per-row random rollbacks; after a rollback the row re-feeds *different*
  tokens, so a stale cache entry being attended would change its logits.

  Returns (records, positions_seen): records are (row, position, logits [V], the row's sequence
  [position + 1] at that moment); positions_seen lists the per-row positions before each extend.
  """
  rng = np.random.RandomState(seed)
  batch = encoder.shape[0]
  vocab = model.vocab_size
  sequences = [[] for _ in range(batch)]  # What each row's cache holds, position by position.
  previous = [dict() for _ in range(batch)]  # position -> the token written there last time.
  position = np.zeros(batch, np.int32)
  cache = model.start(encoder, cache_length=_CACHE_LENGTH)
  records, positions_seen = [], []
  for _ in range(steps):
    room = _CACHE_LENGTH - int(position.max())
    k = int(rng.randint(1, min(max_block, room) + 1))
    block = np.zeros((batch, k), np.int32)
    for b in range(batch):
      for i in range(k):
        p = position[b] + i
        if p == 0:
          token = 0
        elif p in previous[b]:  # Rewritten position: guarantee a different token.
          token = 2 + (previous[b][p] - 2 + rng.randint(1, vocab - 2)) % (vocab - 2)
        else:
          token = rng.randint(2, vocab)
        block[b, i] = token
    positions_seen.append(position.copy())
    logits, cache = model.extend(cache, block)
    logits = np.asarray(logits)
    np.testing.assert_array_equal(cache.position, position + k)
    for b in range(batch):
      del sequences[b][position[b]:]
      for i in range(k):
        p = int(position[b]) + i
        sequences[b].append(int(block[b, i]))
        previous[b][p] = int(block[b, i])
        records.append((b, p, logits[b, i], list(sequences[b])))
    position = position + k
    # Roll each row back by its own random amount (0 .. k + 2, never below 1 token).
    position = np.maximum(1, position - rng.randint(0, k + 3, size=batch)).astype(np.int32)
    cache = model.rewind(cache, position)
    np.testing.assert_array_equal(cache.position, position)
  return records, positions_seen


@pytest.mark.parametrize("seed", [0, 1])
def test_random_blocks_and_rollbacks_match_teacher_forcing(tiny_target, seed):
  records, positions_seen = _run_schedule(tiny_target, _ENCODER, seed, steps=14, max_block=4)
  # The point of the test: rows sit at different positions within one batch.
  assert any(len(set(p.tolist())) == len(_ENCODER) for p in positions_seen)
  # ... and rows are rolled back below where they stood before the last block (then re-fed).
  assert any((later < earlier).any() for earlier, later in zip(positions_seen, positions_seen[1:]))

  # Score every recorded prefix by teacher forcing in one call of a fixed shape.
  rows = np.array([b for b, _, _, _ in records])
  decoder = np.zeros((len(records), _CACHE_LENGTH), np.int32)
  for n, (_, p, _, seq) in enumerate(records):
    assert len(seq) == p + 1
    decoder[n, :p + 1] = seq
  expected = np.asarray(tiny_target.logits(_ENCODER[rows], decoder))
  for n, (b, p, got, _) in enumerate(records):
    np.testing.assert_allclose(got, expected[n, p], atol=_ATOL, rtol=0,
                               err_msg=f"seed {seed}, record {n}: row {b}, position {p}")


def test_rollback_hides_stale_entries(tiny_target):
  """Directly: a row rolled back and fed a new token gives the logits of the new prefix, not of
  the old one, while the other row (not rolled back) is unaffected."""
  enc = _ENCODER[:2]
  cache = tiny_target.start(enc, cache_length=_CACHE_LENGTH)
  _, cache = tiny_target.extend(cache, np.array([[0, 7, 9], [0, 4, 5]], np.int32))
  cache = tiny_target.rewind(cache, np.array([1, 3], np.int32))  # Row 0 drops "7, 9".
  logits, cache = tiny_target.extend(cache, np.array([[20], [6]], np.int32))
  np.testing.assert_array_equal(cache.position, [2, 4])
  expected = np.asarray(tiny_target.logits(enc, np.array([[0, 20, 0, 0], [0, 4, 5, 6]])))
  np.testing.assert_allclose(logits[0, 0], expected[0, 1], atol=_ATOL, rtol=0)
  np.testing.assert_allclose(logits[1, 0], expected[1, 3], atol=_ATOL, rtol=0)
  stale = np.asarray(tiny_target.logits(enc, np.array([[0, 7, 9, 20], [0, 4, 5, 6]])))
  assert np.abs(logits[0, 0] - stale[0, 3]).max() > 1e-3


def test_start_rejects_bad_inputs(tiny_target):
  with pytest.raises(ValueError, match="cache_length"):
    tiny_target.start(_ENCODER, cache_length=0)
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    tiny_target.start(_ENCODER[0], cache_length=4)
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    tiny_target.start(_ENCODER + TINY.vocab_size, cache_length=4)


def test_logits_rejects_bad_inputs(tiny_target):
  dec = np.zeros((4, 3), np.int32)
  with pytest.raises(TypeError, match="decoder_input_tokens"):
    tiny_target.logits(_ENCODER, dec.astype(np.float32))
  with pytest.raises(ValueError, match="decoder_input_tokens"):
    tiny_target.logits(_ENCODER, dec[None])
  with pytest.raises(ValueError, match="decoder_input_tokens"):
    tiny_target.logits(_ENCODER, dec - 1)
  with pytest.raises(ValueError, match="batch size"):
    tiny_target.logits(_ENCODER, dec[:2])


# --- save / load ----------------------------------------------------------------------------


def _leaves(params):
  return {"/".join(k): np.asarray(v) for k, v in model_lib._flatten(params).items()}


def test_save_load_round_trip(tiny_draft, tmp_path):
  path = str(tmp_path / "model")
  tiny_draft.save(path)
  loaded = T5Model.load(path)
  assert loaded.config == tiny_draft.config
  ours, theirs = _leaves(tiny_draft.params), _leaves(loaded.params)
  assert sorted(ours) == sorted(theirs)
  for name in ours:
    assert theirs[name].dtype == np.float32
    np.testing.assert_array_equal(theirs[name], ours[name], err_msg=name)


def test_load_missing_dir_names_config_file(tmp_path):
  path = tmp_path / "nowhere"
  with pytest.raises(ValueError, match="config.json"):
    T5Model.load(str(path))


def test_load_corrupt_config_names_file(tiny_draft, tmp_path):
  path = tmp_path / "model"
  tiny_draft.save(str(path))
  (path / "config.json").write_text("{not json")
  with pytest.raises(ValueError, match="config.json"):
    T5Model.load(str(path))
  (path / "config.json").write_text(json.dumps({"vocab_size": 32}))  # Fields missing.
  with pytest.raises(ValueError, match="config.json"):
    T5Model.load(str(path))


def test_load_missing_params_names_dir(tiny_draft, tmp_path):
  path = tmp_path / "model"
  tiny_draft.save(str(path))
  os.rename(path / "params", path / "elsewhere")
  with pytest.raises(ValueError, match="params"):
    T5Model.load(str(path))


# --- parameters -----------------------------------------------------------------------------


def _copy_tree(tree):
  return {k: _copy_tree(v) if isinstance(v, dict) else np.asarray(v) for k, v in tree.items()}


def test_from_params_names_every_mismatch(tiny_target):
  params = _copy_tree(tiny_target.params)
  del params["decoder"]["logits_dense"]
  params["encoder"]["layers_0"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
  params["token_embedder"]["embedding"] = np.zeros((TINY.vocab_size + 1, TINY.emb_dim))
  with pytest.raises(ValueError) as info:
    T5Model.from_params(TINY, params, source="my_checkpoint")
  message = str(info.value)
  assert "my_checkpoint" in message
  assert "decoder/logits_dense/kernel" in message
  assert "encoder/layers_0/extra/kernel" in message
  assert "token_embedder/embedding" in message


def test_from_params_accepts_a_matching_tree(tiny_target):
  model = T5Model.from_params(TINY, _copy_tree(tiny_target.params))
  enc, dec = _ENCODER[:1, :3], np.zeros((1, 2), np.int32)
  np.testing.assert_array_equal(model.logits(enc, dec), tiny_target.logits(enc, dec))


_T5X_NAMES = {  # T5X's parameter names, with their shapes and logical axes.
    "token_embedder/embedding": (("vocab", "embed"), lambda c: (c.vocab_size, c.emb_dim)),
    "encoder/relpos_bias/rel_embedding": (
        ("heads", "relpos_buckets"), lambda c: (c.num_heads, c.relative_attention_num_buckets)),
    "decoder/relpos_bias/rel_embedding": (
        ("heads", "relpos_buckets"), lambda c: (c.num_heads, c.relative_attention_num_buckets)),
    "encoder/layers_0/attention/query/kernel": (
        ("embed", "joined_kv"), lambda c: (c.emb_dim, c.num_heads * c.head_dim)),
    "encoder/layers_0/attention/out/kernel": (
        ("joined_kv", "embed"), lambda c: (c.num_heads * c.head_dim, c.emb_dim)),
    "encoder/layers_0/pre_attention_layer_norm/scale": (("embed",), lambda c: (c.emb_dim,)),
    "encoder/encoder_norm/scale": (("embed",), lambda c: (c.emb_dim,)),
    "decoder/layers_1/self_attention/key/kernel": (
        ("embed", "joined_kv"), lambda c: (c.emb_dim, c.num_heads * c.head_dim)),
    "decoder/layers_0/encoder_decoder_attention/value/kernel": (
        ("embed", "joined_kv"), lambda c: (c.emb_dim, c.num_heads * c.head_dim)),
    "decoder/layers_0/pre_cross_attention_layer_norm/scale": (("embed",), lambda c: (c.emb_dim,)),
    "decoder/layers_0/mlp/wo/kernel": (("mlp", "embed"), lambda c: (c.mlp_dim, c.emb_dim)),
    "decoder/decoder_norm/scale": (("embed",), lambda c: (c.emb_dim,)),
}
_V11_NAMES = {
    "decoder/layers_0/mlp/wi_0/kernel": (("embed", "mlp"), lambda c: (c.emb_dim, c.mlp_dim)),
    "decoder/layers_0/mlp/wi_1/kernel": (("embed", "mlp"), lambda c: (c.emb_dim, c.mlp_dim)),
    "decoder/logits_dense/kernel": (("embed", "vocab"), lambda c: (c.emb_dim, c.vocab_size)),
}
_V10_NAMES = {
    "encoder/layers_0/mlp/wi/kernel": (("embed", "mlp"), lambda c: (c.emb_dim, c.mlp_dim)),
}
_AXIS_NAMES = {"embed", "mlp", "joined_kv", "heads", "vocab", "relpos_buckets"}


@pytest.mark.parametrize("fixture, names, absent", [
    ("tiny_target", {**_T5X_NAMES, **_V11_NAMES}, "encoder/layers_0/mlp/wi/kernel"),
    ("tiny_draft", {**_T5X_NAMES, **_V10_NAMES}, "decoder/logits_dense/kernel"),
], ids=["v1_1", "v1_0"])
def test_t5x_names_shapes_and_logical_axes(request, fixture, names, absent):
  model = request.getfixturevalue(fixture)
  config = model.config
  if config.num_decoder_layers < 2:
    names = {k.replace("decoder/layers_1", "decoder/layers_0"): v for k, v in names.items()}
  params = _leaves(model.params)
  axes = {"/".join(k): v for k, v in model_lib._flatten(model_lib.logical_axes(config)).items()}
  assert sorted(axes) == sorted(params)  # Every parameter carries logical axis names.
  for name, spec in axes.items():
    spec = tuple(spec)
    assert len(spec) == params[name].ndim, name
    assert set(spec) <= _AXIS_NAMES, (name, spec)
  for name, (spec, shape) in names.items():
    assert params[name].shape == shape(config), name
    assert tuple(axes[name]) == spec, name
  assert absent not in params
  # abstract_params agrees with the real tree without running the initialiser.
  abstract = {"/".join(k): v for k, v in model_lib._flatten(model_lib.abstract_params(config)).items()}
  assert {k: tuple(v.shape) for k, v in abstract.items()} == {k: v.shape for k, v in params.items()}


def test_model_is_a_pytree(tiny_target):
  leaves, treedef = jax.tree_util.tree_flatten(tiny_target)
  assert len(leaves) == len(_leaves(tiny_target.params))
  rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
  assert rebuilt.config == TINY


def test_init_rejects_non_config():
  with pytest.raises(TypeError, match="config"):
    T5Model.init({"vocab_size": 32}, 0)


def test_on_default_device_places_unsharded_leaves_and_keeps_shardings():
  on_default_device = model_lib.on_default_device
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
  named = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  tree = {"plain": jax.ShapeDtypeStruct((4,), np.float32),
          "sharded": jax.ShapeDtypeStruct((4,), np.float32, sharding=named)}
  placed = on_default_device(tree)
  assert placed["plain"].sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])
  assert placed["sharded"].sharding == named
  assert placed["plain"].shape == (4,) and placed["plain"].dtype == np.float32
