"""`load_model`: any model directory specdec writes, by the kind its config.json names."""

from __future__ import annotations

import os
from typing import Any

from specdec.model import CONFIG_FILE, T5Model
from specdec.shared_encoder import KIND as SHARED_ENCODER_KIND
from specdec.shared_encoder import SharedEncoderDraft, read_meta


def load_model(path: str) -> Any:
  """A `T5Model` or a `SharedEncoderDraft` from what its `save` wrote (ValueError naming the
  file if it is missing, corrupt or of an unknown kind)."""
  config_path = os.path.join(os.path.abspath(path), CONFIG_FILE)
  kind = read_meta(config_path).get("kind")
  if kind is None:
    return T5Model.load(path)
  if kind == SHARED_ENCODER_KIND:
    return SharedEncoderDraft.load(path)
  raise ValueError(f"{config_path}: unknown model kind {kind!r}; known: "
                   f"[{SHARED_ENCODER_KIND!r}] (or none, for a T5Model)")
