"""`EncoderDecoderModel`: the inference surface of T5X's model class, over specdec decoders.

T5X users call `model.predict_batch(params, batch, rng)` with a batch of
`encoder_input_tokens` / `decoder_input_tokens` and a gin-bound `decode_fn`; the same calls work
here, and binding `decode_fn = @specdec.decode_fns.speculative_sample` (with a `draft`) switches
a run to speculative decoding.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import jax

from specdec import decode_fns
from specdec.config import T5Config
from specdec.drafts import Draft
from specdec.model import T5Model

Array = jax.Array


class DecodeFn(Protocol):
  """The contract of `decode_fns.temperature_sample` and `decode_fns.speculative_sample`."""

  def __call__(self, *, target: Draft, draft: Draft | None, encoder_input_tokens: Array,
               max_decode_steps: int, decode_rng: Array | None, eos_id: int | None,
               num_decodes: int, **decoder_params: Any) -> tuple[Array, dict[str, Any]]:
    """Returns int32 sequences `[B, num_decodes, L]` and auxiliary outputs."""


class EncoderDecoderModel:
  """A T5 config + decode function (+ draft), called with parameters as T5X's model is."""

  def __init__(self, config: T5Config, *, decode_fn: DecodeFn = decode_fns.temperature_sample,
               draft: Draft | None = None, eos_id: int | None = 1,
               max_decode_length: int = 64, input_vocabulary: Any = None,
               output_vocabulary: Any = None):
    if not isinstance(config, T5Config):
      raise TypeError(f"config must be a T5Config, got {type(config).__name__}")
    self.config = config
    self.decode_fn = decode_fn
    self.draft = draft
    self.eos_id = eos_id
    self.max_decode_length = max_decode_length
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary

  def predict_batch_with_aux(self, params: Any, batch: Mapping[str, Array],
                             rng: Array | None = None, *, num_decodes: int = 1,
                             return_all_decodes: bool = False,
                             decoder_params: Mapping[str, Any] | None = None,
                             ) -> tuple[Array, dict[str, Any]]:
    """Decodes `batch['encoder_input_tokens']` `[B, S]`.

    The decode length is `batch['decoder_input_tokens'].shape[1]` when present (as in T5X), else
    `max_decode_length`. Returns `[B, L]` (or `[B, num_decodes, L]` with `return_all_decodes`).
    """
    if "encoder_input_tokens" not in batch:
      raise ValueError("batch must hold 'encoder_input_tokens'")
    length = (batch["decoder_input_tokens"].shape[1] if "decoder_input_tokens" in batch
              else self.max_decode_length)
    target = T5Model(config=self.config, params=params)
    decodes, aux = self.decode_fn(
        target=target, draft=self.draft, encoder_input_tokens=batch["encoder_input_tokens"],
        max_decode_steps=length, decode_rng=rng, eos_id=self.eos_id, num_decodes=num_decodes,
        **dict(decoder_params or {}))
    return (decodes if return_all_decodes else decodes[:, 0]), aux

  def predict_batch(self, params: Any, batch: Mapping[str, Array], rng: Array | None = None,
                    **kwargs: Any) -> Array:
    return self.predict_batch_with_aux(params, batch, rng, **kwargs)[0]
