"""Tests for `specdec.speculative_generate`: exactness, greedy identity, bookkeeping, errors.

Compile economy: the loop is jitted with (gamma, max_decode_len, sampling, eos_id) static and
the models' configs in the pytree structure, so every distinct (draft kind, γ, sampling, eos)
is one compile; the tests below keep batch shapes fixed and reuse those combinations.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from chi2 import chi2_pvalue  # noqa: E402  (tests/chi2.py)

import specdec  # noqa: E402
from specdec import BigramDraft, PromptLookupDraft, T5Config, T5Model, UnigramDraft  # noqa: E402
from specdec.sampling import logits_to_probs  # noqa: E402

# --- exactness: a chi-squared test against the enumerated target distribution ----------------
#
# A batch of N identical prompts is N independent samples (row b draws from fold_in(rng, b)).
# With V = 8 and length 3 there are 512 continuations; the exact probability of each is the
# product of the target's teacher-forced conditionals, processed by the same
# temperature/top-k/top-p as the loop. Cells with expected count < 5 are pooled.
#
# Threshold: the seed is fixed, so each case is deterministic; under a correct sampler the
# probability that the chosen seed gives p < 1e-4 is 1e-4 per case, ~1e-3 over the 8 cases.
# A wrong sampler is rejected with p-values below 1e-10 (`test_exactness_test_has_power`).

N = 20000
V = 8
LENGTH = 3
P_MIN = 1e-4
SMALL = T5Config(vocab_size=V, emb_dim=16, num_heads=2, num_encoder_layers=1,
                 num_decoder_layers=1, head_dim=8, mlp_dim=24)  # One layer: cheaper compiles.
SMALL_DRAFT = SMALL.replace(emb_dim=8, num_decoder_layers=1, head_dim=4, mlp_dim=12,
                            mlp_activations=("relu",), logits_via_embedding=True)
PROMPT = [3, 5, 2, 7, 4]
SAMPLINGS = {  # name: (temperature, top_k, top_p)
    "T=1": (1.0, 0, 1.0),
    "T=0.7": (0.7, 0, 1.0),
    "top_k=3": (1.0, 3, 1.0),
    "top_p=0.75": (1.0, 0, 0.75),
}


@pytest.fixture(scope="module")
def small_models():
  return T5Model.init(SMALL, 0), T5Model.init(SMALL_DRAFT, 1)


def exact_joint(model: T5Model, temperature, top_k, top_p) -> np.ndarray:
  """[V, V, V] float64: P(y_1 y_2 y_3) under `model` for PROMPT, from teacher forcing."""
  a, b = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
  dec = np.stack([np.zeros(V * V, int), a.ravel(), b.ravel()], axis=1)  # All [0, a, b].
  enc = np.tile(PROMPT, (V * V, 1))
  logits = model.logits(jnp.asarray(enc), jnp.asarray(dec))  # [V², 3, V]
  _check_margins(np.asarray(logits, np.float64), temperature, top_k, top_p)
  probs = np.asarray(logits_to_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p),
                     np.float64).reshape(V, V, 3, V)
  first = probs[0, 0, 0]          # After [0].
  second = probs[:, 0, 1]         # [a, b]: after [0, a].
  third = probs[:, :, 2]          # [a, b, c]: after [0, a, b].
  joint = first[:, None, None] * second[:, :, None] * third
  return joint / joint.sum()


def _check_margins(logits, temperature, top_k, top_p):
  """The top-k / top-p cut must not sit within rounding of a boundary, or cached and
  teacher-forced logits (equal to ~1e-6) could keep different token sets."""
  if top_k:
    top = -np.sort(-logits, axis=-1)
    assert np.min(top[..., top_k - 1] - top[..., top_k]) > 1e-4
  if top_p < 1.0:
    z = logits / temperature
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    sorted_probs = -np.sort(-probs, axis=-1)
    mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
    assert np.min(np.abs(mass_before - top_p)) > 1e-4


def sample_counts(target, draft, gamma, sampling, seed) -> np.ndarray:
  temperature, top_k, top_p = sampling
  enc = jnp.tile(jnp.asarray([PROMPT], jnp.int32), (N, 1))
  result = specdec.speculative_generate(
      target, draft, enc, gamma=gamma, max_decode_len=LENGTH, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=jax.random.PRNGKey(seed), eos_id=None)
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (N, LENGTH) and tokens.min() >= 0 and tokens.max() < V
  s = result.stats
  np.testing.assert_array_equal(s.drafted, gamma * np.asarray(s.target_calls))
  assert (np.asarray(s.accepted) <= np.asarray(s.drafted)).all()
  return np.bincount(np.ravel_multi_index(tuple(tokens.T), (V,) * LENGTH), minlength=V ** LENGTH)


@pytest.mark.parametrize("gamma", [1, 3])
@pytest.mark.parametrize("name", list(SAMPLINGS))
def test_exactness(small_models, name, gamma):
  target, draft = small_models
  sampling = SAMPLINGS[name]
  joint = exact_joint(target, *sampling)
  draft_joint = exact_joint(draft, *sampling)
  # The test is only meaningful if the draft is wrong often enough: total variation between
  # the draft's and the target's sequence distributions.
  assert 0.5 * np.abs(joint - draft_joint).sum() > 0.2
  counts = sample_counts(target, draft, gamma, sampling, seed=100 * gamma + len(name))
  pvalue = chi2_pvalue(counts, joint)
  assert pvalue > P_MIN, f"{name}, gamma={gamma}: p-value {pvalue:.3g}"


def test_exactness_test_has_power(small_models):
  """The same statistic rejects plausible wrong samplers at the same sample size.

  (a) Drafting without verification: sequences ~ the draft's distribution.
  (b) A subtle bug, the correction drawn from q instead of norm(max(0, p − q)): each token is
      then ~ min(p, q) + (1 − β) q instead of p (β = Σ min(p, q)).
  Both are simulated exactly with numpy from the enumerated conditionals.
  """
  target, draft = small_models
  rng = np.random.default_rng(7)
  for name, sampling in SAMPLINGS.items():
    p = exact_conditionals(target, *sampling)
    q = exact_conditionals(draft, *sampling)
    buggy = [np.minimum(pi, qi) + (1.0 - np.minimum(pi, qi).sum(-1, keepdims=True)) * qi
             for pi, qi in zip(p, q)]
    for wrong in (q, buggy):
      joint = joint_from(wrong)
      counts = rng.multinomial(N, joint.ravel() / joint.sum())
      pvalue = chi2_pvalue(counts, joint_from(p))
      assert pvalue < 1e-10, (name, pvalue)


def exact_conditionals(model, temperature, top_k, top_p):
  a, b = np.meshgrid(np.arange(V), np.arange(V), indexing="ij")
  dec = np.stack([np.zeros(V * V, int), a.ravel(), b.ravel()], axis=1)
  logits = model.logits(jnp.asarray(np.tile(PROMPT, (V * V, 1))), jnp.asarray(dec))
  probs = np.asarray(logits_to_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p),
                     np.float64).reshape(V, V, 3, V)
  return probs[0, 0, 0], probs[:, 0, 1], probs[:, :, 2]


def joint_from(conditionals):
  first, second, third = conditionals
  joint = first[:, None, None] * second[:, :, None] * third
  return joint / joint.sum()


# --- greedy identity -------------------------------------------------------------------------

BATCH = 32
SEQ = 8
MAX_LEN = 16


@pytest.fixture(scope="module")
def prompts():
  """int32 [32, 8] random prompts with ragged lengths 1..8 (padding 0 at the end)."""
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, SEQ + 1, BATCH)
  lengths[:2] = [1, SEQ]
  enc = rng.integers(2, 32, (BATCH, SEQ))
  enc[np.arange(SEQ)[None, :] >= lengths[:, None]] = 0
  return jnp.asarray(enc, jnp.int32)


@pytest.fixture(scope="module")
def baseline(tiny_target, prompts):
  """Greedy `generate` without EOS, and an EOS id it produces mid-sequence in several rows."""
  free = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                     eos_id=None).tokens)
  # The token whose first occurrence is strictly inside the sequence in the most rows.
  first = {t: [np.flatnonzero(row == t)[0] for row in free if (row == t).any()]
           for t in range(2, 32)}
  eos = max(first, key=lambda t: sum(1 <= i < MAX_LEN - 1 for i in first[t]))
  with_eos = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                         eos_id=eos).tokens)
  ends = [(row == eos).any() for row in with_eos]
  assert 3 <= sum(ends) < BATCH, "want rows that end early and rows that do not"
  return free, eos, with_eos


def first_eos(tokens, eos):
  """Per row: index of the first EOS, or len if none."""
  is_eos = tokens == eos
  return np.where(is_eos.any(1), np.argmax(is_eos, axis=1), tokens.shape[1])


def check_stats(result, gamma, eos):
  """Bookkeeping every run must satisfy; returns numpy stats."""
  tokens = np.asarray(result.tokens)
  s = {k: np.asarray(getattr(result.stats, k))
       for k in ("target_calls", "draft_calls", "drafted", "accepted", "rejected")}
  for k, v in s.items():
    assert v.shape == (tokens.shape[0],) and v.dtype == np.int32, k
  np.testing.assert_array_equal(s["drafted"], gamma * s["target_calls"])
  np.testing.assert_array_equal(s["draft_calls"], gamma * s["target_calls"])
  assert (s["accepted"] <= s["drafted"]).all() and (s["accepted"] >= 0).all()
  assert (s["rejected"] <= s["target_calls"]).all()
  # Every iteration writes (accepted + 1) tokens; all but the last of a row are needed in full.
  produced = s["accepted"] + s["target_calls"]
  length = np.minimum(first_eos(tokens, eos) + 1, tokens.shape[1])
  assert (produced >= length).all()
  assert (produced - (gamma + 1) < length).all()  # The row stops once it has its tokens.
  if eos is not None:
    # Nothing but padding after the first EOS.
    after = np.arange(tokens.shape[1])[None, :] > first_eos(tokens, eos)[:, None]
    assert (tokens[after] == 0).all()
  return s


GREEDY_GAMMAS = [1, 2, 4, 7]


@pytest.fixture(scope="module")
def drafts(tiny_draft, baseline):
  free = baseline[0]
  return {
      "t5": tiny_draft,
      # Fitted on the target's own outputs: agrees often, so blocks are often long.
      "bigram": BigramDraft.fit(free, vocab_size=32, smoothing=0.1),
      "prompt_lookup": PromptLookupDraft(vocab_size=32),
  }


@pytest.mark.parametrize("gamma", GREEDY_GAMMAS)
@pytest.mark.parametrize("kind", ["t5", "bigram", "prompt_lookup"])
def test_greedy_identity(tiny_target, prompts, baseline, drafts, kind, gamma):
  _, eos, want = baseline
  result = specdec.speculative_generate(tiny_target, drafts[kind], prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=eos)
  np.testing.assert_array_equal(np.asarray(result.tokens), want)
  check_stats(result, gamma, eos)


@pytest.mark.parametrize("gamma", [2, 7])  # γ = 4 without EOS: test_call_counts_target_as_draft.
def test_greedy_target_as_draft_eos_mid_block(tiny_target, prompts, baseline, gamma):
  """α = 1 with EOS: blocks of γ+1 tokens, EOS inside blocks; ended rows stop early."""
  _, eos, want = baseline
  result = specdec.speculative_generate(tiny_target, tiny_target, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=eos)
  tokens = np.asarray(result.tokens)
  np.testing.assert_array_equal(tokens, want)
  s = check_stats(result, gamma, eos)
  ends = first_eos(tokens, eos)
  length = np.minimum(ends + 1, MAX_LEN)
  # Every draft accepted, so row i takes ceil(length_i / (γ+1)) passes; early EOS → fewer.
  np.testing.assert_array_equal(s["target_calls"], -(-length // (gamma + 1)))
  np.testing.assert_array_equal(s["accepted"], s["drafted"])
  # EOS fell strictly inside a block (not at its last slot) for some row; γ = 1 has 2-slot
  # blocks, so index i is mid-block when i % (γ+1) != γ.
  ended = ends < MAX_LEN
  assert (ended & (ends % (gamma + 1) != gamma)).any()
  assert s["target_calls"][ended].min() < s["target_calls"][~ended].min()


# --- call counts ------------------------------------------------------------------------------


def test_call_counts_target_as_draft(tiny_target, prompts, baseline):
  # γ = 4, 16 tokens: 3 full blocks of 5 and a last block cut to 1 token.
  gamma = 4
  result = specdec.speculative_generate(tiny_target, tiny_target, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(np.asarray(result.tokens), baseline[0])
  s = check_stats(result, gamma, None)
  np.testing.assert_array_equal(s["target_calls"], -(-MAX_LEN // (gamma + 1)))
  np.testing.assert_array_equal(s["accepted"], s["drafted"])
  np.testing.assert_array_equal(s["rejected"], 0)


def test_call_counts_always_wrong_draft(tiny_target, prompts, baseline):
  free = baseline[0]
  never = [t for t in range(32) if not (free == t).any()][0]  # Greedy target never picks it.
  draft = UnigramDraft(log_probs=jnp.where(jnp.arange(32) == never, 0.0, -jnp.inf))
  gamma = 3
  result = specdec.speculative_generate(tiny_target, draft, prompts, gamma=gamma,
                                        max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(np.asarray(result.tokens), free)
  s = check_stats(result, gamma, None)
  np.testing.assert_array_equal(s["target_calls"], MAX_LEN)  # One token per target pass.
  np.testing.assert_array_equal(s["accepted"], 0)
  np.testing.assert_array_equal(s["rejected"], MAX_LEN)


# --- rows are independent --------------------------------------------------------------------


def test_rows_are_independent(tiny_target, tiny_draft, prompts):
  def run(enc, seed):
    return np.asarray(specdec.speculative_generate(
        tiny_target, tiny_draft, enc, gamma=3, max_decode_len=MAX_LEN, temperature=1.0,
        rng=jax.random.PRNGKey(seed), eos_id=1).tokens)

  base = run(prompts, 0)
  # Change every row but the first 8 (same shape, so the same compiled loop).
  others = np.asarray(prompts).copy()
  others[8:] = np.roll(others[8:], 3, axis=0)
  others[8:, 0] = (others[8:, 0] + 5) % 30 + 2
  changed = run(jnp.asarray(others), 0)
  np.testing.assert_array_equal(changed[:8], base[:8])
  assert (changed[8:] != base[8:]).any()
  np.testing.assert_array_equal(run(prompts, 0), base)  # Same key, same tokens.
  fresh = run(prompts, 1)
  assert (fresh != base).any(axis=1).mean() > 0.5  # Another key, other tokens (most rows).
  # Identical prompts in a batch are independent samples, not copies.
  same = run(jnp.tile(prompts[:1], (BATCH, 1)), 0)
  assert len({tuple(row) for row in same}) > BATCH // 2
  np.testing.assert_array_equal(same[0], base[0])


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, name", [
    (dict(gamma=0), ValueError, "gamma"),
    (dict(gamma=-1), ValueError, "gamma"),
    (dict(gamma=2.0), TypeError, "gamma"),
    (dict(gamma=True), TypeError, "gamma"),
    (dict(gamma=None), TypeError, "gamma"),
    (dict(max_decode_len=0), ValueError, "max_decode_len"),
    (dict(max_decode_len=2.5), TypeError, "max_decode_len"),
    (dict(temperature=-1.0), ValueError, "temperature"),
    (dict(temperature="hot"), TypeError, "temperature"),
    (dict(temperature=1.0, top_p=0.0), ValueError, "top_p"),
    (dict(temperature=1.0, top_k=-1), ValueError, "top_k"),
    (dict(temperature=1.0), ValueError, "rng"),  # Sampling needs a key.
    (dict(eos_id=32), ValueError, "eos_id"),
    (dict(eos_id="1"), TypeError, "eos_id"),
])
def test_bad_arguments(tiny_target, tiny_draft, prompts, kwargs, error, name):
  args = dict(gamma=2, max_decode_len=4)
  args.update(kwargs)
  with pytest.raises(error, match=name):
    specdec.speculative_generate(tiny_target, tiny_draft, prompts, **args)


def test_bad_models_and_tokens(tiny_target, tiny_draft, prompts, small_models):
  run = lambda target, draft, enc: specdec.speculative_generate(target, draft, enc, gamma=2,
                                                                max_decode_len=4)
  with pytest.raises(ValueError, match="vocab"):
    run(tiny_target, small_models[1], prompts)  # Draft vocabulary 8, target 32.
  with pytest.raises(ValueError, match="vocab"):
    run(tiny_target, UnigramDraft(log_probs=jnp.zeros(31)), prompts)
  for not_a_draft in ("draft", {"vocab_size": 32}, None, jnp.zeros(32)):
    with pytest.raises(TypeError, match="draft"):
      run(tiny_target, not_a_draft, prompts)
  with pytest.raises(TypeError, match="target"):
    run("target", tiny_draft, prompts)
  with pytest.raises(TypeError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.astype(jnp.float32))
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.at[0, 0].set(32))  # Id >= vocab.
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts[0])  # Rank 1.
  with pytest.raises(ValueError, match="encoder_input_tokens"):
    run(tiny_target, tiny_draft, prompts.at[0, 0].set(-1))
