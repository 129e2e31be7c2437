"""What new drafts and verification rules are tested against: tiny configs, independent references.

Tests of a sampler are only as good as the law they compare it with, so the reference here is
written in float64 numpy, independently of `specdec.sampling` (which the loop applies to p and q
alike: a bug there would cancel out of any comparison built on it).

* `TINY`, `TINY_DRAFT`: the suite's cheapest target/draft configs (vocabulary 32).
* `SMALL`, `SMALL_DRAFT`: vocabulary 8, for exactness tests that enumerate every continuation.
* `reference_probs`: temperature → top-k → top-p in float64 numpy.
* `exact_conditionals`: a model's processed next-token laws after every prefix, by teacher forcing;
  `joint_from` multiplies them into the law of the first tokens; `exact_joint` does both.
* `end_at_eos`: the law of outputs that end at EOS (zeros after it), from a law without EOS.
* `chi2_pvalue`: the goodness-of-fit test the exactness tests share (needs scipy).
* `WriteRecorder`: wraps a `Draft`-protocol model and records the end of every block it is fed,
  to check that a decoder never writes past the caches it allocated.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from specdec.config import T5Config

Array = jax.Array

TINY = T5Config(vocab_size=32, emb_dim=16, num_heads=2, num_encoder_layers=1,
                num_decoder_layers=2, head_dim=8, mlp_dim=24)
TINY_DRAFT = TINY.replace(emb_dim=8, num_decoder_layers=1, head_dim=4, mlp_dim=12,
                          mlp_activations=("relu",), logits_via_embedding=True)
SMALL = T5Config(vocab_size=8, emb_dim=16, num_heads=2, num_encoder_layers=1,
                 num_decoder_layers=1, head_dim=8, mlp_dim=24)  # One layer: cheaper compiles.
SMALL_DRAFT = SMALL.replace(emb_dim=8, num_decoder_layers=1, head_dim=4, mlp_dim=12,
                            mlp_activations=("relu",), logits_via_embedding=True)


def reference_probs(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0,
                    boundary_margin: float = 1e-4) -> np.ndarray:
  """Temperature, then top-k, then top-p over the last axis, in float64 numpy.

  Ties at the top-k boundary are all kept (as `specdec.sampling` does). A top-p boundary within
  `boundary_margin` of the cumulative mass is refused (AssertionError): there float32 rounding,
  not the rule, would decide which tokens are kept.
  """
  if temperature <= 0:
    raise ValueError("reference_probs needs temperature > 0")
  z = np.asarray(logits, np.float64) / temperature
  if top_k and top_k < z.shape[-1]:
    kth = np.sort(z, axis=-1)[..., -top_k][..., None]
    z = np.where(z >= kth, z, -np.inf)
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  if top_p < 1.0:
    flat = probs.reshape(-1, probs.shape[-1])
    out = np.zeros_like(flat)
    for i, row in enumerate(flat):
      order = np.argsort(-row, kind="stable")
      mass_before = np.cumsum(row[order]) - row[order]
      assert np.min(np.abs(mass_before - top_p)) > boundary_margin, "top-p boundary at a tie"
      keep = order[mass_before < top_p]
      out[i, keep] = row[keep] / row[keep].sum()
    probs = out.reshape(probs.shape)
  return probs


def exact_conditionals(model, prompt, *, length: int, temperature: float, top_k: int = 0,
                       top_p: float = 1.0, boundary_margin: float = 1e-4) -> list[np.ndarray]:
  """float64 conditionals of a `T5Model` by teacher forcing, processed by `reference_probs`.

  Returns `[c_0, ..., c_{length-1}]`, c_i of shape `[V] * (i + 1)`: c_i[y_1, .., y_i, y] =
  P(y_{i+1} = y | prompt, y_1 .. y_i). Costs V^(length-1) rows of one `model.logits` call; meant
  for vocabularies of ~8 and lengths ≤ 3. A top-k cut within `boundary_margin` (in logits) of a
  tie is refused, as `reference_probs` refuses a top-p one: cached and teacher-forced logits agree
  to ~1e-6, not exactly, so there the kept set would depend on rounding.
  """
  vocab = model.vocab_size
  prefixes = list(itertools.product(range(vocab), repeat=length - 1))
  prefixes = np.array(prefixes, np.int32).reshape(len(prefixes), length - 1)
  dec = np.concatenate([np.zeros((len(prefixes), 1), np.int32), prefixes], axis=1)
  enc = np.tile(np.asarray(prompt, np.int32)[None], (len(dec), 1))
  logits = np.asarray(model.logits(enc, dec), np.float64)  # [V^(n-1), n, V]
  if top_k and top_k < vocab:
    top = -np.sort(-logits, axis=-1)
    assert np.min(top[..., top_k - 1] - top[..., top_k]) > boundary_margin, "top-k cut at a tie"
  probs = reference_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                          boundary_margin=boundary_margin)
  conditionals = []
  for i in range(length):
    # Position i's conditional depends on the first i tokens of the prefix only.
    cond = probs[:, i].reshape((vocab,) * (length - 1) + (vocab,))
    conditionals.append(cond[(slice(None),) * i + (0,) * (length - 1 - i)])  # [V]*i + [V]
  return conditionals


def joint_from(conditionals) -> np.ndarray:
  """The joint law `[V] * n` of (y_1 .. y_n) from conditionals as `exact_conditionals` returns."""
  joint = np.ones(())
  for cond in conditionals:
    joint = joint[..., None] * np.asarray(cond, np.float64)  # c_i has one more axis than joint.
  return joint / joint.sum()


def exact_joint(model, prompt, *, length: int, temperature: float, top_k: int = 0,
                top_p: float = 1.0) -> np.ndarray:
  """float64 `[V] * length`: P(y_1 .. y_length | prompt) under `model` (a `T5Model`) by teacher
  forcing every prefix, processed by `reference_probs` (see `exact_conditionals`)."""
  return joint_from(exact_conditionals(model, prompt, length=length, temperature=temperature,
                                       top_k=top_k, top_p=top_p))


def end_at_eos(joint, eos_id: int) -> np.ndarray:
  """The law of decoder outputs with EOS from `joint` `[V] * n`, the law without it.

  A decoder that stops at EOS outputs y with every token after the first EOS replaced by 0 (the
  T5X convention); its law is the image of `joint` under that map.
  """
  joint = np.asarray(joint, np.float64)
  vocab, length = joint.shape[0], joint.ndim
  out = np.zeros_like(joint)
  for seq in itertools.product(range(vocab), repeat=length):
    ended = list(seq)
    if eos_id in seq:
      first = seq.index(eos_id)
      ended[first + 1:] = [0] * (length - first - 1)
    out[tuple(ended)] += joint[seq]
  return out


def chi2_pvalue(observed, expected_probs) -> float:
  """Chi-squared goodness-of-fit p-value; cells with expected count < 5 are pooled.

  A sample in a cell of probability 0 gives p-value 0 (impossible under the hypothesis).
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  observed = np.asarray(observed, np.float64).ravel()
  probs = np.asarray(expected_probs, np.float64).ravel()
  assert np.isclose(probs.sum(), 1.0, atol=1e-5), probs.sum()
  if observed[probs <= 0].sum() > 0:
    return 0.0
  total = observed.sum()
  expected = probs * total
  small = expected < 5
  obs_cells = list(observed[~small])
  exp_cells = list(expected[~small])
  if small.any() and expected[small].sum() > 0:
    pooled_obs, pooled_exp = observed[small].sum(), expected[small].sum()
    if pooled_exp < 5 and exp_cells:  # Still too small: merge into the smallest large cell.
      i = int(np.argmin(exp_cells))
      obs_cells[i] += pooled_obs
      exp_cells[i] += pooled_exp
    else:
      obs_cells.append(pooled_obs)
      exp_cells.append(pooled_exp)
  if len(exp_cells) < 2:
    return 1.0
  exp_cells = np.asarray(exp_cells)
  exp_cells *= total / exp_cells.sum()  # Guard against float rounding in the sum.
  return float(stats.chisquare(obs_cells, exp_cells).pvalue)


# --- a recording wrapper for capacity checks ---------------------------------------------------

_WRITES: dict[str, list[tuple[int, int]]] = {}


def _record(tag: str, capacity: int, end) -> None:
  _WRITES.setdefault(tag, []).append((int(end), capacity))


@flax.struct.dataclass
class RecorderState:
  inner: Any           # The wrapped model's state.
  position: Array      # [B] int32; each row's position as the caller set it.
  capacity: int = flax.struct.field(pytree_node=False)  # The `cache_length` given to `start`.


@flax.struct.dataclass
class WriteRecorder:
  """A `Draft`-protocol model that delegates to `inner` and records, on every `extend`, the
  largest end (position + block length) over the rows next to the capacity given to `start`.

  Recording goes through `jax.debug.callback`, so it works inside the jitted loops; `writes()`
  returns `[(end, capacity), ...]` for this `tag`. A test-only tool: each call is a host round
  trip.
  """
  inner: Any
  tag: str = flax.struct.field(pytree_node=False)

  @property
  def vocab_size(self) -> int:
    return self.inner.vocab_size

  def start(self, encoder_input_tokens, *, cache_length):
    return RecorderState(inner=self.inner.start(encoder_input_tokens, cache_length=cache_length),
                         position=jnp.zeros((encoder_input_tokens.shape[0],), jnp.int32),
                         capacity=cache_length)

  def extend(self, state, tokens):
    end = jnp.max(state.position + tokens.shape[1])
    jax.debug.callback(functools.partial(_record, self.tag, state.capacity), end)
    logits, inner = self.inner.extend(state.inner, tokens)
    return logits, state.replace(inner=inner, position=state.position + tokens.shape[1])

  def rewind(self, state, position):
    return state.replace(inner=self.inner.rewind(state.inner, position),
                         position=position.astype(jnp.int32))

  def writes(self) -> list[tuple[int, int]]:
    return list(_WRITES.get(self.tag, []))

  def clear(self) -> None:
    _WRITES.pop(self.tag, None)
