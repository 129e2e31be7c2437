"""What new drafts and verification rules are tested against: tiny configs, independent references.

Tests of a sampler are only as good as the law they compare it with, so the reference here is
written in float64 numpy, independently of `specdec.sampling` (which the loop applies to p and q
alike: a bug there would cancel out of any comparison built on it).

* `TINY`, `TINY_DRAFT`: the suite's cheapest target/draft configs (vocabulary 32).
* `SMALL`, `SMALL_DRAFT`: vocabulary 8, for exactness tests that enumerate every continuation;
  `SAMPLINGS` and `PROMPT`, what those tests sample with.
* `speculative_counts`: sequences sampled by `speculative_generate`, counted for `chi2_pvalue`.
* `ragged_prompts`: random 0-padded encoder inputs.
* `reference_probs`: temperature → top-k → top-p in float64 numpy.
* `exact_conditionals`: a model's processed next-token laws after every prefix, by teacher forcing;
  `joint_from` multiplies them into the law of the first tokens; `exact_joint` does both.
* `end_at_eos`: the law of outputs that end at EOS (zeros after it), from a law without EOS.
* `chi2_pvalue`: the goodness-of-fit test the exactness tests share (needs scipy).
* `WriteRecorder`: wraps a `Draft`-protocol model and records the end of every block it is fed,
  to check that a decoder never writes past the caches it allocated.
* `PositionalLM`: a stub target or draft (any `Draft` slot) with a fixed distribution per
  position, whatever the input and the prefix.
* `token_decision`, `block_decision`, `iteration_law`, `sequence_law`, `expected_accepted`,
  `decision_law`: one iteration of
  speculative decoding enumerated exactly in plain Python (floats or `fractions.Fraction`), for
  prefix-dependent p and q and a draft that may stop early: what a verification rule outputs,
  completed with fresh draws from p, must be distributed as p's own sequences.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable, Sequence

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
# What the sequence-level exactness tests sample with: name → (temperature, top_k, top_p), and
# the prompt (SMALL.init(0) / SMALL_DRAFT.init(1) have no top-k/top-p boundary near a tie there).
SAMPLINGS = {"T=1": (1.0, 0, 1.0), "T=0.7": (0.7, 0, 1.0), "top_k=3": (1.0, 3, 1.0),
             "top_p=0.75": (1.0, 0, 0.75)}
PROMPT = (3, 5, 2, 7, 4)


def ragged_prompts(batch: int, length: int, *, vocab_size: int, seed: int = 0) -> np.ndarray:
  """int32 `[batch, length]` random ids in [2, vocab_size), each row 0-padded after a random
  length in 1..length."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, length + 1, batch)
  enc = rng.integers(2, vocab_size, (batch, length))
  enc[np.arange(length)[None, :] >= lengths[:, None]] = 0
  return enc.astype(np.int32)


def reference_probs(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0,
                    boundary_margin: float = 1e-4) -> np.ndarray:
  """Temperature, then top-k, then top-p over the last axis, in float64 numpy.

  Ties at the top-k boundary are all kept (as `specdec.sampling` does). A top-k boundary whose
  k-th and (k+1)-th scaled logits are within `boundary_margin`, or a top-p boundary within it of
  the cumulative mass, is refused (AssertionError): there float32 rounding (cached against
  teacher-forced logits, ~1e-6), not the rule, would decide which tokens are kept.
  """
  if temperature <= 0:
    raise ValueError("reference_probs needs temperature > 0")
  z = np.asarray(logits, np.float64) / temperature
  if top_k and top_k < z.shape[-1]:
    top = -np.sort(-z, axis=-1)
    assert np.min(top[..., top_k - 1] - top[..., top_k]) > boundary_margin, "top-k boundary tie"
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


def speculative_counts(target, draft, prompt, *, n: int, length: int, temperature: float,
                       top_k: int = 0, top_p: float = 1.0, seed: int, **options):
  """`n` rows of `prompt` decoded by `speculative_generate` (no EOS, `length` tokens) → (counts of
  each sequence, float64 `[V^length]` in `exact_joint`'s order, and the result). `options` go to
  `speculative_generate` (gamma, verification, ...)."""
  from specdec.speculative import speculative_generate  # pylint: disable=g-import-not-at-top
  vocab = target.vocab_size
  enc = jnp.tile(jnp.asarray([prompt], jnp.int32), (n, 1))
  result = speculative_generate(target, draft, enc, max_decode_len=length,
                                temperature=temperature, top_k=top_k, top_p=top_p,
                                rng=jax.random.PRNGKey(seed), eos_id=None, **options)
  tokens = np.asarray(result.tokens)
  assert tokens.shape == (n, length) and tokens.min() >= 0 and tokens.max() < vocab
  index = np.ravel_multi_index(tuple(tokens.T), (vocab,) * length)
  return np.bincount(index, minlength=vocab ** length), result


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


# --- a stub model -----------------------------------------------------------------------------


@flax.struct.dataclass
class PositionalState:
  position: jax.Array  # [B] int32; decoder tokens consumed per row.


@flax.struct.dataclass
class PositionalLM:
  """A cached LM whose next-token distribution depends on the position only: after consuming t
  tokens it gives `log_probs[min(t, L) - 1]` (the last row repeats). Implements the `Draft`
  protocol, so it can be a target as well as a draft: the law of its sequences is the product
  of its rows, and speculative decoding with two of them has closed-form expectations."""
  log_probs: jax.Array  # [L, V] float32; row t - 1 is the distribution after t tokens.

  @property
  def vocab_size(self) -> int:
    return self.log_probs.shape[1]

  def start(self, encoder_input_tokens, *, cache_length):
    del cache_length
    return PositionalState(jnp.zeros((encoder_input_tokens.shape[0],), jnp.int32))

  def extend(self, state, tokens):
    after = state.position[:, None] + jnp.arange(1, tokens.shape[1] + 1)[None, :]  # [B, k]
    rows = jnp.clip(after - 1, 0, self.log_probs.shape[0] - 1)
    return self.log_probs[rows], PositionalState(state.position + tokens.shape[1])

  def rewind(self, state, position):
    return PositionalState(position.astype(jnp.int32))


# --- one iteration, enumerated exactly ----------------------------------------------------------
#
# A distribution is a sequence of V numbers (floats, or Fractions for exact arithmetic); `p` and
# `q` map a prefix (a tuple of the tokens drafted so far in this iteration) to the target's and
# the draft's next-token distribution after it. A decision function maps one draft path
# x_1..x_k with p_cond[i] = p(x_1..x_i) (i = 0..k) and q_cond[i] = q(x_1..x_i) (i = 0..k-1) to
# (P(τ = i) for i = 0..k, the distribution of the next token after keeping x_1..x_i).

Dist = Sequence
Decision = Callable[[Sequence[Dist], Sequence[Dist], Sequence[int]], tuple[list, list]]


def _normalized_or(weights: Dist, fallback: Dist) -> list:
  total = sum(weights)
  return [w / total for w in weights] if total > 0 else list(fallback)


def token_decision(p_cond, q_cond, x, *, lenience=1) -> tuple[list, list]:
  """The paper's rule: x_i kept with probability min(1, p(x_i) / (l·q(x_i))); after the first
  rejection the next token ~ norm(max(0, p − l·q)); after x_k it is ~ p."""
  k = len(x)
  keep = [min(1, p_cond[i][x[i]] / (lenience * q_cond[i][x[i]])) for i in range(k)]
  taus, residuals, alive = [], [], 1
  for i in range(k + 1):
    stop = 1 if i == k else 1 - keep[i]
    taus.append(alive * stop)
    if i < k:
      alive = alive * keep[i]
      residuals.append(_normalized_or([max(0, a - lenience * b) for a, b in
                                       zip(p_cond[i], q_cond[i])], p_cond[i]))
    else:
      residuals.append(list(p_cond[k]))
  return taus, residuals


def block_weights(p_cond, q_cond, x) -> tuple[list, list]:
  """Block verification's a_0..a_k and h_0..h_k (h_0 = 1, unused) for one path, k = len(x):
  a_0 = 1, a_i = min(1, a_{i-1} p(x_i) / q(x_i)); h_i = Z_i / (Z_i + 1 − a_i) for i < k with
  Z_i = Σ max(a_i p_{i+1} − q_{i+1}, 0) (1 when that denominator is 0), h_k = a_k."""
  k = len(x)
  a = [1]
  for i in range(k):
    a.append(min(1, a[-1] * p_cond[i][x[i]] / q_cond[i][x[i]]))
  h = [1]
  for i in range(1, k + 1):
    if i < k:
      z = sum(max(a[i] * b - c, 0) for b, c in zip(p_cond[i], q_cond[i]))
      h.append(1 if z + 1 - a[i] == 0 else z / (z + 1 - a[i]))
    else:
      h.append(a[k])
  return a, h


def block_decision(p_cond, q_cond, x) -> tuple[list, list]:
  """Block verification (Sun et al., Algorithm 2) with k = len(x) proposals (`block_weights`):
  τ = the largest i with η_i ≤ h_i (0 if none); the next token ~ norm(max(a_τ p_{τ+1} − q_{τ+1},
  0)), or ~ p_{k+1} when τ = k."""
  k = len(x)
  a, h = block_weights(p_cond, q_cond, x)
  taus, residuals = [], []
  for i in range(k + 1):
    prob = h[i]
    for j in range(i + 1, k + 1):
      prob = prob * (1 - h[j])
    taus.append(prob)
    if i < k:
      residuals.append(_normalized_or([max(a[i] * b - c, 0) for b, c in
                                       zip(p_cond[i], q_cond[i])], p_cond[i]))
    else:
      residuals.append(list(p_cond[k]))
  return taus, residuals


def iteration_law(p, q, *, vocab_size: int, gamma: int, decide: Decision = block_decision,
                  stop: Callable[[tuple], bool] | None = None) -> dict[tuple, object]:
  """The law of one iteration's output x_1..x_τ, t, completed to γ + 1 tokens with fresh draws
  from p: {sequence: probability}. The draft proposes x_{i+1} ~ q(x_1..x_i) until γ tokens, or
  until `stop(x_1..x_i)` is true (i ≥ 1; adaptive γ). A rule is exact iff this equals
  `sequence_law(p, ...)`. Costs O(V^(γ+1)); meant for V^(γ+1) of a few thousand."""
  law: dict[tuple, object] = {}

  def complete(prefix: tuple, prob) -> None:
    if len(prefix) == gamma + 1:
      law[prefix] = law.get(prefix, 0) + prob
      return
    for y, py in enumerate(p(prefix)):
      if py:
        complete(prefix + (y,), prob * py)

  def drafts(prefix: tuple, prob):
    if len(prefix) == gamma or (prefix and stop is not None and stop(prefix)):
      yield prefix, prob
      return
    for x, qx in enumerate(q(prefix)):
      if qx:
        yield from drafts(prefix + (x,), prob * qx)

  for x, prob in drafts((), 1):
    p_cond = [p(x[:i]) for i in range(len(x) + 1)]
    q_cond = [q(x[:i]) for i in range(len(x))]
    taus, residuals = decide(p_cond, q_cond, x)
    for tau, (p_tau, residual) in enumerate(zip(taus, residuals)):
      for y, ry in enumerate(residual):
        if p_tau and ry:
          complete(x[:tau] + (y,), prob * p_tau * ry)
  assert all(len(s) == gamma + 1 and max(s) < vocab_size for s in law)
  return law


def expected_accepted(p, q, *, gamma: int, decide: Decision = block_decision,
                      stop: Callable[[tuple], bool] | None = None):
  """E[τ], the draft tokens one iteration keeps (same arguments as `iteration_law`)."""
  total = 0

  def walk(prefix: tuple, prob):
    nonlocal total
    if len(prefix) == gamma or (prefix and stop is not None and stop(prefix)):
      p_cond = [p(prefix[:i]) for i in range(len(prefix) + 1)]
      q_cond = [q(prefix[:i]) for i in range(len(prefix))]
      taus, _ = decide(p_cond, q_cond, prefix)
      total += prob * sum(i * t for i, t in enumerate(taus))
      return
    for x, qx in enumerate(q(prefix)):
      if qx:
        walk(prefix + (x,), prob * qx)

  walk((), 1)
  return total


def decision_law(decide: Decision, p, q, *, gamma: int, vocab_size: int) -> np.ndarray:
  """float64 `[γ+1, V]`: P(τ = i, next token = t) of one iteration with γ proposals, for
  context-independent p (`[γ+1, V]`, row i after i drafted tokens) and q (`[γ, V]`). Row sums
  are the law of τ; a sharper statistic than the completed output for residual bugs."""
  law = np.zeros((gamma + 1, vocab_size))
  p_cond, q_cond = [list(p[i]) for i in range(gamma + 1)], [list(q[i]) for i in range(gamma)]

  def walk(prefix: tuple, prob) -> None:
    if len(prefix) == gamma:
      taus, residuals = decide(p_cond, q_cond, prefix)
      law[:] += prob * np.asarray(taus, np.float64)[:, None] * np.asarray(residuals, np.float64)
      return
    for x, qx in enumerate(q_cond[len(prefix)]):
      if qx:
        walk(prefix + (x,), prob * qx)
  walk((), 1.0)
  return law


def sequence_law(p, *, vocab_size: int, length: int) -> dict[tuple, object]:
  """{sequence: probability} of `length` tokens sampled from p one at a time."""
  law = {}
  for seq in itertools.product(range(vocab_size), repeat=length):
    prob = 1
    for i in range(length):
      prob = prob * p(seq[:i])[seq[i]]
    law[seq] = prob
  return law


def law_array(law: dict[tuple, object], *, vocab_size: int, length: int) -> np.ndarray:
  """A {sequence: probability} law as float64 `[V] * length`."""
  out = np.zeros((vocab_size,) * length)
  for seq, prob in law.items():
    out[seq] += float(prob)
  return out


def random_tree(rng: np.random.Generator, vocab_size: int, *, concentration: float = 0.7,
                zeros: int = 0):
  """A prefix → distribution map drawn lazily (Dirichlet), memoised; `zeros` tokens per
  distribution get probability 0."""
  table: dict[tuple, list] = {}

  def dist(prefix: tuple) -> list:
    if prefix not in table:
      probs = rng.dirichlet(np.full(vocab_size, concentration))
      if zeros:
        probs[rng.choice(vocab_size, zeros, replace=False)] = 0.0
        probs /= probs.sum()
      table[prefix] = [float(v) for v in probs]
    return table[prefix]
  return dist
