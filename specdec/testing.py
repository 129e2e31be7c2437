"""What new drafts and verification rules are tested against: tiny configs, independent references.

Tests of a sampler are only as good as the law they compare it with, so the reference here is
written in float64 numpy, independently of `specdec.sampling` (which the loop applies to p and q
alike: a bug there would cancel out of any comparison built on it).

* `TINY`, `TINY_DRAFT`: the suite's cheapest target/draft configs (vocabulary 32).
* `SMALL`, `SMALL_DRAFT`: vocabulary 8, for exactness tests that enumerate every continuation.
* `reference_probs`: temperature → top-k → top-p in float64 numpy.
* `exact_joint`: the law of the first `length` tokens of a model by teacher forcing.
* `chi2_pvalue`: the goodness-of-fit test the exactness tests share (needs scipy).
"""

from __future__ import annotations

import itertools

import numpy as np

from specdec.config import T5Config

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


def exact_joint(model, prompt, *, length: int, temperature: float, top_k: int = 0,
                top_p: float = 1.0) -> np.ndarray:
  """float64 `[V] * length`: P(y_1 .. y_length | prompt) under `model` (a `T5Model`) by teacher
  forcing every prefix, processed by `reference_probs`. Costs V^(length-1) rows of one
  `model.logits` call; meant for vocabularies of ~8 and lengths ≤ 3."""
  vocab = model.vocab_size
  prefixes = np.array(list(itertools.product(range(vocab), repeat=length - 1)), np.int32)
  prefixes = prefixes.reshape(-1, length - 1)
  dec = np.concatenate([np.zeros((len(prefixes), 1), np.int32), prefixes], axis=1)
  enc = np.tile(np.asarray(prompt, np.int32)[None], (len(dec), 1))
  logits = np.asarray(model.logits(enc, dec), np.float64)  # [V^(n-1), n, V]
  probs = reference_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
  joint = np.ones((vocab,) * length)
  for i in range(length):
    # Position i's conditional depends on the first i tokens of the prefix only.
    cond = probs[:, i].reshape((vocab,) * (length - 1) + (vocab,))
    cond = cond[(slice(None),) * i + (0,) * (length - 1 - i)]  # [V]*i + [V]
    joint = joint * cond.reshape((vocab,) * (i + 1) + (1,) * (length - 1 - i))
  return joint / joint.sum()


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
