"""Tests for `specdec.simulated`: the simulated-acceptance draft benchmarks use.

What it must do: keep greedy output equal to `generate`'s; be accepted exactly where its mask
says (the loop's counts equal `replay`'s), hence with probability α; call the wrapped draft as
often as the loop calls a plain draft, with work XLA cannot drop; stay exact when sampling.

Compile economy: α, the seed and the continuation are arrays in the draft's pytree, so every
(α, seed) below reuses one compiled loop per (γ, max_decode_len).
"""

import unittest.mock

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import specdec
from specdec import BigramDraft, T5Model, UnigramDraft, drafts, simulated
from specdec.drafts import PositionState
from specdec.speculative import _speculative_generate
from specdec.validation import check_rng
from specdec.testing import SMALL, SMALL_DRAFT, TINY, TINY_DRAFT, chi2_pvalue, exact_joint

GAMMA = 3
MAX_LEN = 24
BATCH = 8


@pytest.fixture(scope="module")
def prompts():
  return jnp.asarray(np.random.default_rng(0).integers(2, TINY.vocab_size, (BATCH, 6)), jnp.int32)


@pytest.fixture(scope="module")
def continuation(tiny_target, prompts):
  # Long enough that no block ever reads past it (replay's positions >= L never occur).
  return np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN + GAMMA + 1,
                                     eos_id=None).tokens)


def test_replay_counts_a_hand_built_mask():
  wrong = np.array([[0, 0, 1, 0, 0, 0, 0, 0]], bool)
  # m=0: keeps 0,1, rejects 2 → m=3; m=3: keeps 3,4,5 (γ) → m=7; m=7: keeps 7, position 8 is
  # past the continuation (wrong) → m=9.
  r = simulated.replay(wrong, gamma=3, max_decode_len=8)
  assert (r.target_calls.tolist(), r.accepted.tolist(), r.rejected.tolist()) == ([3], [6], [2])
  assert r.alpha == pytest.approx(6 / 8)


def test_greedy_output_is_generates_and_acceptance_follows_the_mask(tiny_target, tiny_draft,
                                                                    prompts, continuation):
  baseline = np.asarray(specdec.generate(tiny_target, prompts, max_decode_len=MAX_LEN,
                                         eos_id=None).tokens)
  np.testing.assert_array_equal(continuation[:, :MAX_LEN], baseline)
  for alpha in (0.3, 0.75):
    accepted = rejected = 0
    for seed in range(5):
      sim = specdec.simulate_acceptance(tiny_draft, continuation, alpha=alpha, seed=seed)
      out = specdec.speculative_generate(tiny_target, sim, prompts, gamma=GAMMA,
                                         max_decode_len=MAX_LEN, eos_id=None)
      np.testing.assert_array_equal(np.asarray(out.tokens), baseline)
      expected = simulated.replay(sim.wrong, gamma=GAMMA, max_decode_len=MAX_LEN)
      for name in ("target_calls", "accepted", "rejected"):
        np.testing.assert_array_equal(np.asarray(getattr(out.stats, name)),
                                      getattr(expected, name), err_msg=f"{name}, α={alpha}")
      accepted += int(np.sum(out.stats.accepted))
      rejected += int(np.sum(out.stats.rejected))
    # Each tested position is kept with probability α independently of the earlier outcomes, so
    # α̂ is a binomial proportion over n = accepted + rejected trials (~600 here). Fixed seeds
    # make this deterministic; 4σ is a two-sided 6e-5 bound for a correct draft, while a
    # proposal off by one position would give α̂ ≈ 1/32.
    n = accepted + rejected
    alpha_hat = accepted / n
    assert abs(alpha_hat - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / n), (alpha, alpha_hat, n)


def test_mask_is_bernoulli_and_nested():
  low = simulated.wrong_mask((64, 256), alpha=0.6, seed=3)
  high = simulated.wrong_mask((64, 256), alpha=0.8, seed=3)
  assert not np.any(high & ~low)  # A higher α marks a subset of the positions.
  n = low.size  # 4σ on 16384 Bernoulli(0.4) draws.
  assert abs(low.mean() - 0.4) < 4 * np.sqrt(0.24 / n)


def test_wrapped_draft_is_called_as_often_as_a_plain_draft(tiny_target, tiny_draft, prompts,
                                                            continuation):
  # As T5X's decoding tests do: run eagerly and count the calls.
  real_extend = T5Model.extend
  one = prompts[:1]
  sim = specdec.simulate_acceptance(tiny_draft, continuation[:1], alpha=0.7, seed=0)
  for draft in (tiny_draft, sim):
    with jax.disable_jit(), unittest.mock.patch.object(
        T5Model, "extend", autospec=True, side_effect=real_extend) as extend:
      out = specdec.speculative_generate(tiny_target, draft, one, gamma=GAMMA, max_decode_len=6,
                                         eos_id=None)
    draft_calls = [c for c in extend.call_args_list if c.args[0].config == TINY_DRAFT]
    target_calls = [c for c in extend.call_args_list if c.args[0].config == TINY]
    iterations = int(out.stats.target_calls[0])
    assert len(target_calls) == iterations
    # Per iteration: a 2-token catch-up pass, then γ − 1 single-token steps.
    assert len(draft_calls) == GAMMA * iterations, type(draft).__name__
    assert [c.args[2].shape[1] for c in draft_calls[:GAMMA]] == [2] + [1] * (GAMMA - 1)


def _flops(target, draft, tokens) -> float:
  compiled = _speculative_generate.lower(
      target, draft, tokens, check_rng(None, needed=False), gamma=2,
      max_decode_len=7, sampling=specdec.Sampling(), eos_id=None).compile()
  analysis = compiled.cost_analysis()
  return float((analysis[0] if isinstance(analysis, list) else analysis)["flops"])


def test_wrapped_draft_work_is_not_eliminated(monkeypatch):
  # With XLA's optimisations on (conftest turns most off), the loop with the simulated draft
  # must cost what it costs with the wrapped draft itself; the negative control (logits that
  # ignore the wrapped draft) shows the measure notices when XLA drops that work. Shapes used
  # nowhere else, so no executable compiled without optimisations is reused.
  target, draft = T5Model.init(SMALL, 0), T5Model.init(SMALL, 1)
  tokens = jnp.full((3, 5), 3, jnp.int32)
  continuation = np.full((3, 7), 4, np.int32)
  previous = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  try:
    plain = _flops(target, draft, tokens)
    sim = _flops(target, specdec.simulate_acceptance(draft, continuation, alpha=0.5), tokens)
    monkeypatch.setattr(simulated, "proposal_logits", lambda p, live, v: jnp.where(
        jax.nn.one_hot(p, v, dtype=bool), 0.0, simulated.OFF_LOGIT))
    _speculative_generate.clear_cache()
    dropped = _flops(target, specdec.simulate_acceptance(draft, continuation, alpha=0.5), tokens)
  finally:
    jax.config.update("jax_disable_most_optimizations", previous)
    _speculative_generate.clear_cache()
  assert sim >= plain, (sim, plain)
  assert sim < 1.05 * plain, (sim, plain)
  assert dropped < 0.97 * sim, (dropped, sim)


def test_proposal_logits_argmax_is_the_proposal_whatever_the_wrapped_logits():
  proposed = jnp.array([[3, 0]])
  live = jnp.array([[[1e30, -jnp.inf, jnp.nan, 5.0], [jnp.inf, 2.0, 1e9, -1e9]]], jnp.float32)
  logits = simulated.proposal_logits(proposed, live, 4)
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
  np.testing.assert_array_equal(np.argmax(logits, -1), [[3, 0]])
  assert float(jnp.max(jnp.abs(logits - jnp.where(jax.nn.one_hot(proposed, 4) > 0, 0.0,
                                                  simulated.OFF_LOGIT)))) <= simulated.LIVE_SCALE


def test_sampled_output_is_distributed_as_the_target():
  # q is (numerically) one-hot; speculative sampling stays exact. N identical prompts are N
  # independent samples; threshold as in test_speculative (fixed seed, p < 1e-4 fails).
  n, length, prompt = 20000, 3, [3, 5, 2, 7, 4]
  target, draft = T5Model.init(SMALL, 0), T5Model.init(SMALL_DRAFT, 1)
  tokens = jnp.tile(jnp.asarray(prompt, jnp.int32), (n, 1))
  continuation = np.tile(np.asarray(specdec.generate(target, tokens[:1], max_decode_len=length,
                                                     eos_id=None).tokens), (n, 1))
  sim = specdec.simulate_acceptance(draft, continuation, alpha=0.7, seed=0)
  out = specdec.speculative_generate(target, sim, tokens, gamma=2, max_decode_len=length,
                                     temperature=1.0, rng=jax.random.PRNGKey(1), eos_id=None)
  samples = np.asarray(out.tokens)
  counts = np.zeros((SMALL.vocab_size,) * length)
  np.add.at(counts, tuple(samples.T), 1)
  assert chi2_pvalue(counts, exact_joint(target, prompt, length=length, temperature=1.0)) > 1e-4


@flax.struct.dataclass
class BlockBigram:
  """A target whose one-token passes follow `single` and whose block passes follow `block`: a
  caricature of a device whose verify pass rounds differently from `generate`'s steps."""
  single: jax.Array  # [V, V] float32.
  block: jax.Array   # [V, V] float32.

  @property
  def vocab_size(self):
    return self.single.shape[0]

  def start(self, encoder_input_tokens, *, cache_length):
    return PositionState(jnp.zeros((encoder_input_tokens.shape[0],), jnp.int32))

  def extend(self, state, tokens):
    table = self.single if tokens.shape[1] == 1 else self.block
    return table[tokens], PositionState(state.position + tokens.shape[1])

  def rewind(self, state, position):
    return PositionState(position.astype(jnp.int32))


def test_settle_follows_the_loops_own_numerics():
  vocab = 16
  single = np.random.default_rng(0).normal(size=(vocab, vocab)).astype(np.float32)
  block = single.copy()
  for row in (0, 5, 9):  # Flip the argmax of a few rows in block passes.
    block[row, np.argsort(block[row])[-2]] += 10.0
  target = BlockBigram(jnp.asarray(single), jnp.asarray(block))
  draft = UnigramDraft(log_probs=jnp.zeros((vocab,), jnp.float32))
  tokens = jnp.full((4, 3), 2, jnp.int32)
  generated = np.asarray(specdec.generate(target, tokens, max_decode_len=20, eos_id=None).tokens)
  settled = simulated.settle(target, draft, tokens, generated, alpha=0.8, seed=0, gamma=3,
                             max_decode_len=20)
  assert settled.converged and settled.passes == 2
  assert not np.array_equal(settled.tokens, generated)  # The loop decodes `block`'s path.
  out = specdec.speculative_generate(target, settled.draft, tokens, gamma=3, max_decode_len=20,
                                     eos_id=None)
  expected = simulated.replay(settled.draft.wrong, gamma=3, max_decode_len=20)
  np.testing.assert_array_equal(np.asarray(out.stats.accepted), expected.accepted)
  np.testing.assert_array_equal(np.asarray(out.stats.rejected), expected.rejected)
  # Without settling, the flipped rows desynchronise and acceptance collapses.
  naive = specdec.speculative_generate(
      target, specdec.simulate_acceptance(draft, generated, alpha=0.8, seed=0), tokens, gamma=3,
      max_decode_len=20, eos_id=None)
  assert int(np.sum(naive.stats.accepted)) < int(np.sum(expected.accepted))


@flax.struct.dataclass
class EncoderReader:
  """A stand-in `TargetEncoderDraft` (the real one is `SharedEncoderDraft`): a T5 draft started
  from the target's encoder output, which it checks has the target's width."""
  model: T5Model

  @property
  def vocab_size(self):
    return self.model.vocab_size

  def check_target(self, target):
    if target.config.emb_dim != 16:
      raise ValueError(f"target emb_dim {target.config.emb_dim} is not 16")

  def start_from_encoded(self, encoder_input_tokens, encoded, *, cache_length):
    assert encoded.shape[-1] == 16
    return self.model.start(encoder_input_tokens, cache_length=cache_length)

  def start(self, encoder_input_tokens, *, cache_length):
    raise AssertionError("a TargetEncoderDraft is started from the target's encoding")

  def extend(self, state, tokens):
    return self.model.extend(state, tokens)

  def rewind(self, state, position):
    return self.model.rewind(state, position)


def test_target_encoder_drafts_are_forwarded(tiny_target, tiny_draft, prompts, continuation):
  reader = EncoderReader(tiny_draft)
  sim = specdec.simulate_acceptance(reader, continuation, alpha=0.7, seed=0)
  assert isinstance(sim, simulated.SimulatedSharedEncoderDraft)
  assert drafts.reads_target_encoder(sim) and isinstance(sim, specdec.Draft)
  assert not drafts.reads_target_encoder(
      specdec.simulate_acceptance(tiny_draft, continuation, alpha=0.7))
  out = specdec.speculative_generate(tiny_target, sim, prompts, gamma=GAMMA,
                                     max_decode_len=MAX_LEN, eos_id=None)
  np.testing.assert_array_equal(np.asarray(out.tokens), continuation[:, :MAX_LEN])
  wide = T5Model.init(TINY.replace(emb_dim=24), 2)
  with pytest.raises(ValueError, match="emb_dim 24"):
    specdec.speculative_generate(wide, sim, prompts, gamma=GAMMA, max_decode_len=MAX_LEN)


def test_bad_arguments_are_named(tiny_target, tiny_draft, prompts, continuation):
  make = specdec.simulate_acceptance
  with pytest.raises(ValueError, match="alpha"):
    make(tiny_draft, continuation, alpha=1.5)
  with pytest.raises(TypeError, match="alpha"):
    make(tiny_draft, continuation, alpha=True)
  with pytest.raises(ValueError, match="seed"):
    make(tiny_draft, continuation, alpha=0.5, seed=-1)
  with pytest.raises(TypeError, match="continuation"):
    make(tiny_draft, continuation.astype(np.float32), alpha=0.5)
  with pytest.raises(ValueError, match="continuation"):
    make(tiny_draft, continuation[0], alpha=0.5)
  with pytest.raises(ValueError, match=r"outside \[0, 32\)"):
    make(tiny_draft, continuation + 32, alpha=0.5)
  with pytest.raises(TypeError, match="draft"):
    make(object(), continuation, alpha=0.5)
  with pytest.raises(ValueError, match="2 rows but the simulated draft.s continuation has 8"):
    specdec.speculative_generate(tiny_target, make(tiny_draft, continuation, alpha=0.5),
                                 prompts[:2], gamma=GAMMA, max_decode_len=MAX_LEN)
  with pytest.raises(ValueError, match="max_decode_len"):
    simulated.settle(tiny_target, tiny_draft, prompts, continuation[:, :4], alpha=0.5, seed=0,
                     gamma=GAMMA, max_decode_len=MAX_LEN)
