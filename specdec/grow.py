"""Function-preserving growth of a trained T5 into a larger shape (a warm start).

A bigger target trained from scratch needs an accelerator; grown from a trained smaller one it
starts where that one is (the same outputs, token for token) and training only has to use the
new capacity (Net2Net, Chen et al. 2016; the zero-initialised residual branches of
Goyal et al. 2017). `grow_t5` maps a `T5Model` onto a larger `T5Config` exactly:

* **width** (`emb_dim` × k, k an integer): the residual stream is the old one repeated k times.
  RMS layer norm sees the same mean square, so its output repeats too; every kernel that reads
  the stream gets its old rows split into k parts that sum to them (1/k each plus zero-sum noise
  that breaks the copies' symmetry without changing any output); every kernel that writes it
  has its columns repeated; the embedding's columns repeat.
* **heads, MLP units**: the new ones get the fresh model's initial kernels, except the rows of
  `out` / `wo` that carry them back into the stream, which are zero.
* **layers**: the old layers are spread over the new stack (first stays first, last stays last);
  the new layers are fresh ones whose `out` and `wo` kernels are zero, so each is the identity
  on the pre-norm residual stream until training moves them.

`grow_shared_encoder_draft` does the same for a `SharedEncoderDraft`'s `encoder_dim` (the width
of the target encoder states it reads), so a draft made for the small target reads the grown
target's encoder with the same outputs. Tied logits (`logits_via_embedding`) are refused: the
embedding cannot repeat on input and stay scaled on output at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from specdec.config import T5Config
from specdec.model import T5Model

Params = Any

# Kernels that write the residual stream: their rows are the hidden units (heads, MLP units).
_WRITERS = ("out", "wo")


def layer_map(old: int, new: int) -> list[int]:
  """Where each of `old` layers goes in a stack of `new` (spread evenly, ends kept)."""
  if old > new:
    raise ValueError(f"cannot grow {old} layers into {new}")
  if old == 1:
    return [0]
  return [round(i * (new - 1) / (old - 1)) for i in range(old)]


def _check(old: T5Config, new: T5Config) -> int:
  if not isinstance(new, T5Config):
    raise TypeError(f"config must be a T5Config, got {type(new).__name__}")
  same = ("vocab_size", "head_dim", "mlp_activations", "logits_via_embedding",
          "relative_attention_num_buckets", "relative_attention_max_distance")
  for name in same:
    if getattr(old, name) != getattr(new, name):
      raise ValueError(f"config.{name} must equal the model's ({getattr(old, name)!r}), got "
                       f"{getattr(new, name)!r}")
  if old.logits_via_embedding:
    raise ValueError("grow_t5 cannot grow a model with tied logits (logits_via_embedding=True)")
  if new.emb_dim % old.emb_dim:
    raise ValueError(f"config.emb_dim must be a multiple of the model's {old.emb_dim}, got "
                     f"{new.emb_dim}")
  for name in ("num_heads", "mlp_dim", "num_encoder_layers", "num_decoder_layers"):
    if getattr(new, name) < getattr(old, name):
      raise ValueError(f"config.{name} must be at least the model's {getattr(old, name)}, got "
                       f"{getattr(new, name)}")
  return new.emb_dim // old.emb_dim


def _split_rows(w: np.ndarray, k: int, rng: np.random.Generator, noise: float) -> np.ndarray:
  """[e, n] -> [k*e, n] whose k row blocks sum to `w` (each w/k plus zero-sum noise)."""
  blocks = np.repeat(w[None] / k, k, axis=0)
  if noise and k > 1:
    eps = rng.standard_normal(blocks.shape).astype(np.float32) * noise * float(np.std(w))
    blocks = blocks + (eps - eps.mean(axis=0, keepdims=True))
  return blocks.reshape(k * w.shape[0], w.shape[1])


def _grow_leaf(path: tuple[str, ...], old: np.ndarray, fresh: np.ndarray, k: int,
               rng: np.random.Generator, noise: float) -> np.ndarray:
  """One parameter: `old` embedded in `fresh` (the new shape's initial value)."""
  if path[-1] == "scale":  # RMS norm over the stream.
    return np.tile(old, k)
  if path[-1] == "embedding":  # [vocab, emb]: the stream's first value.
    return np.tile(old, (1, k))
  out = np.array(fresh, np.float32, copy=True)
  if path[-1] == "rel_embedding":  # [heads, buckets]: new heads keep their fresh bias.
    out[:old.shape[0]] = old
    return out
  if path[-2] in _WRITERS:  # [hidden, emb]: new hidden rows zero, columns repeated.
    out[:] = 0.0
    out[:old.shape[0]] = np.tile(old, (1, k))
    return out
  # A reader [emb, hidden] (every other kernel of a T5 reads the stream, the cross-attention's
  # keys and values the encoder's): rows split over the copies, new hidden columns fresh.
  out[:, :old.shape[1]] = _split_rows(old, k, rng, noise)
  return out


def _grow_tree(old: Params, fresh: Params, *, k: int, layer_maps: dict, rng,
               noise: float) -> Params:
  old_flat = {p: np.asarray(v, np.float32) for p, v in traverse_util.flatten_dict(old).items()}
  grown, used = {}, set()
  for path, value in traverse_util.flatten_dict(fresh).items():
    source = path
    if len(path) > 1 and path[1].startswith("layers_"):
      olds = layer_maps[path[0]]
      j = int(path[1][len("layers_"):])
      if j not in olds:  # A new layer: fresh, with its residual branches closed.
        v = np.array(value, np.float32, copy=True)
        grown[path] = np.zeros_like(v) if path[-2] in _WRITERS else v
        continue
      source = (path[0], f"layers_{olds.index(j)}") + path[2:]
    if source not in old_flat:
      raise ValueError(f"the model has no parameter {'/'.join(source)!r} to grow "
                       f"{'/'.join(path)!r} from")
    used.add(source)
    grown[path] = _grow_leaf(path, old_flat[source], np.asarray(value), k, rng, noise)
  if set(old_flat) - used:
    raise ValueError(f"parameters the grown model has no place for: "
                     f"{sorted('/'.join(p) for p in set(old_flat) - used)[:5]}")
  return traverse_util.unflatten_dict(grown)


def _check_noise(noise: Any) -> float:
  if isinstance(noise, bool) or not isinstance(noise, (int, float)):
    raise TypeError(f"noise must be a number, got {noise!r}")
  if not noise >= 0:  # Also rejects NaN.
    raise ValueError(f"noise must be >= 0, got {noise}")
  return float(noise)


def grow_t5(model: T5Model, config: T5Config, *, seed: int = 0, noise: float = 1e-3) -> T5Model:
  """`model` grown to `config` with the same outputs (see the module docstring).

  `seed` draws the new parameters (the fresh model's T5X initializers) and the symmetry-breaking
  noise; `noise` is its size relative to each split kernel's standard deviation (0: plain
  copies, which only dropout would tell apart in training).
  """
  if not isinstance(model, T5Model):
    raise TypeError(f"model must be a T5Model, got {type(model).__name__}")
  noise = _check_noise(noise)
  k = _check(model.config, config)
  fresh = jax.device_get(T5Model.init(config, seed).params)
  maps = {"encoder": layer_map(model.config.num_encoder_layers, config.num_encoder_layers),
          "decoder": layer_map(model.config.num_decoder_layers, config.num_decoder_layers)}
  params = _grow_tree(jax.device_get(model.params), fresh, k=k, layer_maps=maps,
                      rng=np.random.default_rng(seed), noise=noise)
  return T5Model.from_params(config, params, source="grow_t5")


def grow_shared_encoder_draft(draft: Any, target: T5Model, *, seed: int = 0,
                              noise: float = 1e-3) -> Any:
  """A `SharedEncoderDraft` made for a target of `encoder_dim` e, reading `target`'s encoder
  (width k·e, e.g. a `grow_t5` of the original) instead; nothing else changes. Its outputs on
  the grown target equal the original's on the original target; it records `target`'s
  fingerprint."""
  from specdec.shared_encoder import SharedEncoderDraft, encoder_fingerprint  # pylint: disable=g-import-not-at-top
  if not isinstance(draft, SharedEncoderDraft):
    raise TypeError(f"draft must be a SharedEncoderDraft, got {type(draft).__name__}")
  if not isinstance(target, T5Model):
    raise TypeError(f"target must be a T5Model, got {type(target).__name__}")
  noise = _check_noise(noise)
  old = draft.config
  if target.config.vocab_size != old.vocab_size:
    raise ValueError(f"target.vocab_size {target.config.vocab_size} differs from the draft's "
                     f"{old.vocab_size}")
  if target.config.emb_dim % old.encoder_dim:
    raise ValueError(f"target emb_dim {target.config.emb_dim} is not a multiple of the draft's "
                     f"encoder_dim {old.encoder_dim}")
  k = target.config.emb_dim // old.encoder_dim
  config = dataclasses.replace(old, encoder_dim=target.config.emb_dim)
  fresh = jax.device_get(SharedEncoderDraft.init(config, seed).params)
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(jax.device_get(draft.params))
  grown = {}
  for path, value in traverse_util.flatten_dict(fresh).items():
    w = np.asarray(flat[path], np.float32)
    if path[-3:-1] in (("encoder_decoder_attention", "key"), ("encoder_decoder_attention", "value")):
      w = _split_rows(w, k, rng, noise)  # Reads the (repeated) target encoder states.
    if w.shape != value.shape:
      raise ValueError(f"{'/'.join(path)}: {w.shape} does not grow into {value.shape}")
    grown[path] = w
  return SharedEncoderDraft.from_params(config, traverse_util.unflatten_dict(grown),
                                        target_fingerprint=encoder_fingerprint(target))
