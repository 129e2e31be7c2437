"""The target/draft pairs that specdec trains and ships (see specdec/assets/checkpoints/*/TRAINING.md).

    pair = specdec.pretrained.load("ende")
    tokens = pair.encode(["The file is saved."])
    out = specdec.speculative_generate(pair.target, pair.draft, tokens, gamma=4, max_decode_len=64)
    print(pair.decode(out.tokens))
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import numpy as np

from specdec import data
from specdec.loading import load_model
from specdec.model import T5Model

# SPECDEC_CHECKPOINT_DIR points elsewhere (tests use it to stand in small pairs).
CHECKPOINT_DIR = os.environ.get(
    "SPECDEC_CHECKPOINT_DIR",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "checkpoints"))
# name → (seqio task whose inputs the pair was trained on, input prefix).
_PAIRS = {
    "ende": ("specdec_ende", "translate English to German: "),
}


@dataclasses.dataclass(frozen=True)
class PretrainedPair:
  """A shipped target and its drafts over one SentencePiece vocabulary.

  Every field named `draft` or `draft_<kind>` is a draft (None where this installation lacks
  it); `draft_names()` lists the present ones and `get_draft(name)` looks one up by name, so
  scripts that take a `--draft` flag work for any draft a pair gains.
  """
  name: str
  task: str
  prefix: str
  target: T5Model
  draft: Any                   # The one to use (a T5Model or a SharedEncoderDraft).
  draft_small: T5Model | None  # A small T5 of its own (own encoder), distilled from the target.
  draft_plain: T5Model | None  # A small T5 trained on the labels only (for comparison).
  vocabulary: data.Vocabulary  # sentencepiece-backed: encode(str) / decode(ids).

  def draft_names(self) -> list[str]:
    """Names of the drafts present, the default one (`draft`) first."""
    return [f.name for f in dataclasses.fields(self)
            if (f.name == "draft" or f.name.startswith("draft_"))
            and getattr(self, f.name) is not None]

  def get_draft(self, name: str = "draft") -> Any:
    """The draft called `name`; ValueError listing the present ones for any other name."""
    if name not in self.draft_names():
      raise ValueError(f"draft: pair {self.name!r} has no draft {name!r}; it has "
                       f"{self.draft_names()}")
    return getattr(self, name)

  def encode(self, texts: Sequence[str], *, max_length: int | None = None) -> np.ndarray:
    """Texts → int32 `[B, S]` encoder inputs (task prefix added, EOS appended, 0-padded)."""
    if isinstance(texts, str):
      raise TypeError("texts must be a sequence of strings, not one string")
    ids = [list(self.vocabulary.encode(self.prefix + t)) + [1] for t in texts]
    if max_length is not None:
      ids = [x[:max_length - 1] + [1] if len(x) > max_length else x for x in ids]
    width = max(len(x) for x in ids)
    out = np.zeros((len(ids), width), np.int32)
    for i, x in enumerate(ids):
      out[i, :len(x)] = x
    return out

  def decode(self, tokens: Any) -> list[str] | str:
    """Decoder outputs → text, stopping at EOS and ignoring padding.

    An int `[B, T]` batch gives a list of B strings; one int `[T]` row (e.g. `tokens[0]`) gives
    one string. Anything else raises ValueError/TypeError naming `tokens`.
    """
    array = np.asarray(tokens)
    if array.ndim not in (1, 2):
      raise ValueError(f"tokens must be one row [T] or a batch [B, T] of token ids, got shape "
                       f"{array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
      raise TypeError(f"tokens must be integer token ids, got dtype {array.dtype}")
    texts = [self._decode_row(row.tolist()) for row in np.atleast_2d(array)]
    return texts[0] if array.ndim == 1 else texts

  def _decode_row(self, row: list[int]) -> str:
    row = row[:row.index(1)] if 1 in row else row
    return self.vocabulary.decode([t for t in row if t > 1])


def names() -> list[str]:
  """Names of the shipped pairs present in this installation."""
  return sorted(n for n in _PAIRS if os.path.isdir(os.path.join(CHECKPOINT_DIR, n, "target")))


@functools.lru_cache(maxsize=None)
def load(name: str) -> PretrainedPair:
  """Loads a shipped pair; an unknown name raises ValueError listing the known ones."""
  if name not in names():
    raise ValueError(f"Unknown pretrained pair {name!r}; known: {names()}")
  task, prefix = _PAIRS[name]
  root = os.path.join(CHECKPOINT_DIR, name)
  drafts = {f.name: os.path.join(root, f.name) for f in dataclasses.fields(PretrainedPair)
            if f.name == "draft" or f.name.startswith("draft_")}
  return PretrainedPair(
      name=name, task=task, prefix=prefix, target=T5Model.load(os.path.join(root, "target")),
      **{field: load_model(path) if field == "draft" or os.path.isdir(path) else None
         for field, path in drafts.items()},
      vocabulary=data.vocabulary())
