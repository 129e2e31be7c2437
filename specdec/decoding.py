"""`generate`: the plain autoregressive baseline that speculative decoding is measured against.

T5X conventions: pad 0, EOS 1, the decoder starts from token 0, outputs are 0 after EOS. One
jitted function around a `lax.while_loop`; one token per step through the same block cache that
speculative decoding uses; the loop stops as soon as every row has ended. T5X-style decode
functions over it (`temperature_sample`, `speculative_sample`) are in `specdec.decode_fns`.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from specdec import sampling as sampling_lib
from specdec.drafts import Draft, check_draft
from specdec.sampling import Sampling
from specdec.validation import check_positive_int, check_rng, check_tokens

Array = jax.Array


@flax.struct.dataclass
class DecodeResult:
  tokens: Array  # [B, max_decode_len] int32; 0 after each row's first EOS.


@flax.struct.dataclass
class _LoopState:
  step: Array     # [] int32; tokens generated so far (the same for every row).
  pending: Array  # [B] int32; the next decoder input (0 at the start).
  tokens: Array   # [B, max_decode_len] int32; generated tokens, 0 where not (yet) generated.
  done: Array     # [B] bool; the row has produced EOS.
  cache: Any      # The model's decoding state (a DecoderCache for a T5Model).


def check_decode_args(model: Any, encoder_input_tokens: Any, *, max_decode_len: Any,
                      temperature: Any, top_k: Any, top_p: Any, rng: Any,
                      eos_id: Any, model_name: str = "model"):
  """Validates what `generate` and `speculative_generate` share; returns normalised values."""
  check_draft(model, name=model_name)
  tokens = check_tokens("encoder_input_tokens", encoder_input_tokens, vocab_size=model.vocab_size)
  max_decode_len = check_positive_int("max_decode_len", max_decode_len)
  sampling = Sampling(temperature=temperature, top_k=top_k, top_p=top_p)
  rng = check_rng(rng, needed=not sampling.greedy)
  if eos_id is not None:
    if isinstance(eos_id, bool) or not isinstance(eos_id, int):
      raise TypeError(f"eos_id must be an int or None, got {eos_id!r}")
    if not 0 <= eos_id < model.vocab_size:
      raise ValueError(f"eos_id must be in [0, {model.vocab_size}), got {eos_id}")
  return tokens, max_decode_len, sampling, rng


def choose(logits: Array, keys: Array, sampling: Sampling) -> Array:
  """Next tokens `[B]` from logits `[B, V]`: argmax when greedy, else a draw per row key."""
  if sampling.greedy:
    return sampling_lib.argmax(logits)
  return sampling_lib.sample_rows(keys, sampling.probs(logits))


def end_after_eos(tokens: Array, eos_id: int | None) -> Array:
  """Zeroes everything after each row's first EOS in `[B, T]` tokens."""
  if eos_id is None:
    return tokens
  is_eos = tokens == eos_id
  after_eos = jnp.cumsum(is_eos, axis=1) - is_eos > 0
  return jnp.where(after_eos, 0, tokens)


def generate(model: Draft, encoder_input_tokens: Array, *, max_decode_len: int,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             rng: Array | None = None, eos_id: int | None = 1) -> DecodeResult:
  """Decodes one token per step from `model` (a `T5Model`, or any cached LM).

  Args:
    model: The model; anything implementing the `specdec.drafts.Draft` protocol.
    encoder_input_tokens: int `[B, S]`, 0 = padding.
    max_decode_len: Tokens to decode per row (static).
    temperature: 0 for greedy; otherwise sample from softmax(logits / temperature).
    top_k: Keep only the k most likely tokens when sampling (0 = off).
    top_p: Nucleus sampling mass when sampling (1 = off).
    rng: PRNG key (or int seed); required when sampling. Row b draws from `fold_in(rng, b)`, so
      a batch of identical prompts is a batch of independent samples.
    eos_id: End-of-sequence id (T5: 1); None decodes exactly `max_decode_len` tokens.

  Returns:
    DecodeResult with `.tokens` int32 `[B, max_decode_len]`, 0 after EOS.
  """
  tokens, max_decode_len, sampling, rng = check_decode_args(
      model, encoder_input_tokens, max_decode_len=max_decode_len, temperature=temperature,
      top_k=top_k, top_p=top_p, rng=rng, eos_id=eos_id)
  return _generate(model, tokens, rng, max_decode_len=max_decode_len, sampling=sampling,
                   eos_id=eos_id)


@functools.partial(jax.jit, static_argnames=("max_decode_len", "sampling", "eos_id"))
def _generate(model, encoder_input_tokens, rng, *, max_decode_len, sampling, eos_id):
  batch = encoder_input_tokens.shape[0]
  keys = sampling_lib.row_keys(rng, batch)
  initial = _LoopState(
      step=jnp.zeros((), jnp.int32), pending=jnp.zeros((batch,), jnp.int32),
      tokens=jnp.zeros((batch, max_decode_len), jnp.int32), done=jnp.zeros((batch,), bool),
      cache=model.start(encoder_input_tokens, cache_length=max_decode_len))

  def keep_going(state: _LoopState) -> Array:
    return (state.step < max_decode_len) & ~jnp.all(state.done)

  def one_token(state: _LoopState) -> _LoopState:
    logits, cache = model.extend(state.cache, state.pending[:, None])
    token = choose(logits[:, 0], sampling_lib.step_keys(keys, state.step), sampling)
    token = jnp.where(state.done, 0, token)
    done = state.done if eos_id is None else state.done | (token == eos_id)
    return _LoopState(step=state.step + 1, pending=token,
                      tokens=state.tokens.at[:, state.step].set(token), done=done, cache=cache)

  final = jax.lax.while_loop(keep_going, one_token, initial)
  return DecodeResult(tokens=final.tokens)

