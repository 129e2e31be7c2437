"""The decode caches are stored as the attention's dots read them: no pass copies a cache.

Keys are kept `[N, B, H, D, L]` and values `[N, B, H, L, D]` (`specdec.cache.DecoderCache`)
because XLA's dots take K as (head_dim × length) and V as (length × head_dim) per head. Stored
`[N, B, L, H, D]` (the layout before), every decoder pass transposed each layer's self- and
cross-attention keys and values into those forms: on the shipped 48M target that was 32 copies
and ~2 ms of a ~8 ms step on a 2-core CPU. The optimized HLO of `generate` and of the speculative
loop is read here for copies and transposes of cache-sized arrays inside the while loop's body.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

import specdec
from specdec import T5Model
from specdec.cache import self_cache_shapes
from specdec.shared_encoder import SharedEncoderConfig, SharedEncoderDraft
from specdec.testing import TINY

CONFIG = TINY.replace(num_heads=2, head_dim=8, num_decoder_layers=2)
PROMPTS = jnp.array([[3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 0, 0]], jnp.int32)
ENCODER_LENGTH = PROMPTS.shape[1]
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%?([\w.-]+) = \w+\[([\d,]*)\]\S* (\w+)\(")


def cache_copies_in_loop(hlo: str, *, min_elements: int, head_dim: int) -> list[str]:
  """The instructions of optimized HLO text inside a while body that copy or transpose an array
  with a `head_dim` axis and at least `min_elements` elements (a copy fusion counts: XLA names it
  after its root). The head_dim axis tells a cache from the attention bias `[B, H, k, L]`, which
  is rebuilt every pass anyway; the test shapes keep k and L different from head_dim."""
  found = []
  for line in hlo.splitlines():
    match = _INSTRUCTION.match(line)
    if not match or "/while/body/" not in line:
      continue
    name, dims, opcode = match.groups()
    shape = [int(d) for d in dims.split(",") if d]
    copies = opcode in ("copy", "transpose") or name.startswith(("copy", "transpose"))
    if copies and head_dim in shape and int(np.prod(shape)) >= min_elements:
      found.append(line.strip()[:200])
  return found


def _one_layer_cache_elements(config) -> int:
  """H × D × the shorter of the caches (the encoder's here): one layer's smallest cache."""
  return config.num_heads * config.head_dim * ENCODER_LENGTH


def test_generate_copies_no_cache():
  model = T5Model.init(CONFIG, 0)
  hlo = jax.jit(lambda t: specdec.generate(model, t, max_decode_len=16).tokens).lower(
      PROMPTS).compile().as_text()
  assert "while" in hlo
  assert cache_copies_in_loop(hlo, min_elements=_one_layer_cache_elements(CONFIG),
                              head_dim=CONFIG.head_dim) == []


def test_speculative_loop_copies_no_cache():
  target = T5Model.init(CONFIG, 0)
  draft = SharedEncoderDraft.from_target(
      target, SharedEncoderConfig.for_target(CONFIG, num_layers=1), rng=1)
  run = lambda t: specdec.speculative_generate(target, draft, t, gamma=3,
                                               max_decode_len=16).tokens
  hlo = jax.jit(run).lower(PROMPTS).compile().as_text()
  assert "while" in hlo
  assert cache_copies_in_loop(hlo, min_elements=_one_layer_cache_elements(CONFIG),
                              head_dim=CONFIG.head_dim) == []


def test_the_check_finds_a_transposed_cache():
  """The same check on a loop that reads a cache in the old layout: it must report it."""
  key_shape, _ = self_cache_shapes(CONFIG, batch=1, length=ENCODER_LENGTH)
  keys = jnp.ones(key_shape[1:], jnp.float32)  # [B, H, D, L].
  old_layout = jnp.transpose(keys, (0, 3, 1, 2))  # [B, L, H, D].

  def body(_, carry):
    q, cache = carry
    weights = jnp.einsum("bhd,blhd->bhl", q, cache)  # Reads [B, L, H, D] as (D × L) per head.
    return jnp.einsum("bhl,blhd->bhd", weights, cache), cache * 1.0001

  q = jnp.ones((1, CONFIG.num_heads, CONFIG.head_dim), jnp.float32)
  hlo = jax.jit(lambda q, c: jax.lax.fori_loop(0, 3, body, (q, c))[0]).lower(
      q, old_layout).compile().as_text()
  assert cache_copies_in_loop(hlo, min_elements=_one_layer_cache_elements(CONFIG),
                              head_dim=CONFIG.head_dim)
