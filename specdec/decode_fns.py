"""T5X-style decode functions over specdec's decoders: `temperature_sample`, `speculative_sample`.

T5X's `EncoderDecoderModel` calls a gin-bound `decode_fn` (e.g. T5X's
`decoding.temperature_sample`) with keyword arguments and gets back `[B, num_decodes, L]` sequences
plus auxiliary outputs. These two follow that convention (T5X's argument names: `decode_rng`,
`num_decodes`, `topk`, `topp`, `max_decode_steps`), so a run switches to speculative decoding with
one gin line:

    EncoderDecoderModel.decode_fn = @specdec.decode_fns.speculative_sample
    specdec.decode_fns.speculative_sample.gamma = 4

This module stands above both decoders (`specdec.decoding.generate` and
`specdec.speculative.speculative_generate`) and is imported by neither.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from specdec.decoding import generate
from specdec.drafts import Draft
from specdec.speculative import speculative_generate

Array = jax.Array


def _repeat_decodes(tokens: Array, num_decodes: int) -> Array:
  if isinstance(num_decodes, bool) or not isinstance(num_decodes, int) or num_decodes < 1:
    raise ValueError(f"num_decodes must be an int >= 1, got {num_decodes!r}")
  return jnp.repeat(jnp.asarray(tokens), num_decodes, axis=0)


def temperature_sample(*, target: Draft, encoder_input_tokens: Array, max_decode_steps: int,
                       decode_rng: Array | None = None, eos_id: int | None = 1,
                       num_decodes: int = 1, temperature: float = 0.0, topk: int = 0,
                       topp: float = 1.0, draft: Draft | None = None,
                       ) -> tuple[Array, dict[str, Any]]:
  """T5X-style baseline decode: `generate` → (int32 `[B, num_decodes, L]`, aux `{}`).

  `draft` is accepted (and ignored) so a model wrapper can pass the same arguments to either
  decode function.
  """
  del draft
  batch = encoder_input_tokens.shape[0]
  result = generate(target, _repeat_decodes(encoder_input_tokens, num_decodes),
                    max_decode_len=max_decode_steps, temperature=temperature, top_k=topk,
                    top_p=topp, rng=decode_rng, eos_id=eos_id)
  return result.tokens.reshape(batch, num_decodes, -1), {}


def speculative_sample(*, target: Draft, draft: Draft, encoder_input_tokens: Array,
                       max_decode_steps: int, gamma: int = 4, decode_rng: Array | None = None,
                       eos_id: int | None = 1, num_decodes: int = 1, temperature: float = 0.0,
                       topk: int = 0, topp: float = 1.0, verification: str = "token",
                       confidence_threshold: float | None = None, lenience: float = 1.0,
                       ) -> tuple[Array, dict[str, Any]]:
  """T5X-style speculative decode → (int32 `[B, num_decodes, L]`, aux with per-row `stats`).

  verification, confidence_threshold, lenience: as in `speculative_generate` (gin-bindable).
  """
  if draft is None:
    raise ValueError("speculative_sample needs a draft (EncoderDecoderModel.draft)")
  batch = encoder_input_tokens.shape[0]
  result = speculative_generate(
      target, draft, _repeat_decodes(encoder_input_tokens, num_decodes), gamma=gamma,
      max_decode_len=max_decode_steps, temperature=temperature, top_k=topk, top_p=topp,
      rng=decode_rng, eos_id=eos_id, verification=verification,
      confidence_threshold=confidence_threshold, lenience=lenience)
  return result.tokens.reshape(batch, num_decodes, -1), {"stats": result.stats}
