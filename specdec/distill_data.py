"""Distillation data made by the target: its own outputs for the training inputs.

DistillSpec (Zhou et al., 2023) found that *what* the draft is distilled on matters as much as the
divergence: the draft proposes tokens after prefixes the target produced, not after reference
translations, so training on the target's own outputs puts the teacher-forced prefixes where
speculative decoding will meet them. `teacher_outputs` decodes them (greedily, or sampled at a
temperature), `save` / `load` keep them in one `.npz` file that `scripts/train.py` reads through
`train.distill_targets` (with `train.teacher_dir`: the loss stays forward KL on the target's
logits, now along the target's own sequences).

File format (`np.savez`, no pickles): `input_ids` / `target_ids` int32, the rows concatenated;
`input_offsets` / `target_offsets` int64 `[N + 1]`, row i = ids[offsets[i]:offsets[i + 1]];
`meta`: a JSON string (teacher, temperature, seed, max_decode_len, count).
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from specdec import training
from specdec.model import T5Model

EOS_ID = training.EOS_ID
_KEYS = ("input_ids", "input_offsets", "target_ids", "target_offsets", "meta")


def teacher_outputs(teacher: T5Model, inputs: Sequence[np.ndarray], *, batch_size: int = 64,
                    max_decode_len: int = 64, temperature: float = 0.0, seed: int = 0,
                    progress=None) -> list[np.ndarray]:
  """The teacher's outputs for tokenised inputs, as training targets.

  Args:
    teacher: The target model.
    inputs: int32 token arrays (EOS-terminated, no padding), e.g. from `training.tokenize_pairs`.
    batch_size: Rows per `generate` call (the last batch is filled with EOS-only rows).
    max_decode_len: Tokens decoded per row.
    temperature: 0 = greedy; otherwise samples (batch k of the length-sorted inputs uses
      `fold_in(PRNGKey(seed), k)`).
    seed: See `temperature`.
    progress: Optional callable, called with the number of rows done after each batch.

  Returns:
    One int32 array per input: the output up to and including its EOS; an output that does not
    end within `max_decode_len` tokens is kept as decoded (no EOS appended).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from specdec.decoding import generate  # pylint: disable=g-import-not-at-top
  if not isinstance(teacher, T5Model):
    raise TypeError(f"teacher must be a T5Model, got {type(teacher).__name__}")
  if batch_size < 1 or max_decode_len < 1:
    raise ValueError(f"batch_size and max_decode_len must be >= 1, got {batch_size}, "
                     f"{max_decode_len}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  if not inputs:
    raise ValueError("inputs is empty")
  buckets = training.DEFAULT_BUCKETS
  max_input = max(len(x) for x in inputs)
  if max_input > buckets[-1]:
    buckets += (max_input,)
  # Decode in order of input length (short batches pad less and finish sooner), return in order.
  order = np.argsort([len(x) for x in inputs], kind="stable")
  batches = training.encoder_batches([inputs[i] for i in order], batch_size=batch_size,
                                     buckets=buckets)
  outputs, done = [], 0
  for k, (enc, real) in enumerate(batches):
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), k) if temperature > 0 else None
    tokens = np.asarray(generate(teacher, enc, max_decode_len=max_decode_len,
                                 temperature=temperature, rng=rng).tokens)[:real]
    for row in tokens:
      eos = np.flatnonzero(row == EOS_ID)
      outputs.append(np.asarray(row[:eos[0] + 1] if eos.size else row, np.int32))
    done += real
    if progress is not None:
      progress(done)
  in_order = [None] * len(outputs)
  for position, i in enumerate(order):
    in_order[i] = outputs[position]
  return in_order


def _flatten(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
  offsets = np.zeros(len(rows) + 1, np.int64)
  offsets[1:] = np.cumsum([len(r) for r in rows])
  return np.concatenate([np.asarray(r, np.int32) for r in rows]), offsets


def save(path: str, inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
         meta: dict[str, Any] | None = None) -> None:
  """Writes (input, teacher output) pairs to `path` (`.npz`; see the module docstring)."""
  if len(inputs) != len(targets) or not inputs:
    raise ValueError(f"need equally many (and some) inputs and targets, got {len(inputs)} and "
                     f"{len(targets)}")
  input_ids, input_offsets = _flatten(inputs)
  target_ids, target_offsets = _flatten(targets)
  meta = dict(meta or {}, count=len(inputs))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    np.savez_compressed(f, input_ids=input_ids, input_offsets=input_offsets,
                        target_ids=target_ids, target_offsets=target_offsets,
                        meta=np.array(json.dumps(meta, sort_keys=True)))


def load(path: str) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
  """Reads a file written by `save`: (inputs, targets, meta). Errors name the file."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"distillation data file not found: {path}")
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in _KEYS if k not in f.files]
      if missing:
        raise ValueError(f"missing arrays {missing}")
      arrays = {k: f[k] for k in _KEYS}
    meta = json.loads(str(arrays["meta"]))
    rows = {}
    for name in ("input", "target"):
      ids, offsets = arrays[f"{name}_ids"], arrays[f"{name}_offsets"]
      if (offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != ids.size
          or np.any(np.diff(offsets) <= 0)):
        raise ValueError(f"{name}_offsets do not index {name}_ids")
      rows[name] = [ids[a:b].astype(np.int32) for a, b in zip(offsets[:-1], offsets[1:])]
    if len(rows["input"]) != len(rows["target"]) or len(rows["input"]) != meta.get("count"):
      raise ValueError(f"{len(rows['input'])} inputs, {len(rows['target'])} targets, "
                       f"meta says {meta.get('count')}")
  except (ValueError, OSError, KeyError, json.JSONDecodeError) as e:
    raise ValueError(f"{path} is not a distillation data file: {e}") from e
  return rows["input"], rows["target"], meta
