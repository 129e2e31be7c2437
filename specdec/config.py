"""`T5Config`: the hyperparameters of a T5 encoder-decoder, with T5X's field names.

The field names are those of `t5x/examples/t5/network.py`'s `T5Config`, so a T5X gin file's
`network.T5Config.*` bindings map onto this class one to one (`specdec.t5x_gin.config_from_gin`
reads them; this module imports nothing of specdec's).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

_ACTIVATIONS = ("relu", "gelu", "linear", "gelu_exact", "silu")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Hyperparameters of a T5 (v1.0 or v1.1) encoder-decoder.

  Attributes:
    vocab_size: Number of token ids (pad 0, EOS 1, unk 2 by T5 convention).
    emb_dim: Width of the residual stream (T5's d_model).
    num_heads: Attention heads per layer.
    num_encoder_layers: Encoder blocks.
    num_decoder_layers: Decoder blocks.
    head_dim: Width of one attention head (T5's d_kv); need not equal emb_dim / num_heads.
    mlp_dim: Hidden width of the feed-forward block (T5's d_ff).
    mlp_activations: ('relu',) for T5 v1.0, ('gelu', 'linear') for v1.1's gated GELU.
    dropout_rate: Dropout used in training only; decoding is always deterministic.
    logits_via_embedding: True ties the output layer to the token embedding (v1.0) and scales
      the final hidden state by emb_dim**-0.5; False uses an untied `logits_dense` (v1.1).
    dtype: Activation dtype: 'float32', 'bfloat16' or 'float16', given as that string (as gin
      passes it) or as any dtype-like object naming it (`jnp.bfloat16`, `np.float32`,
      `np.dtype('float32')`, as T5X's own `T5Config` takes it); stored as the canonical string,
      so equal configs compare, hash and serialise alike. Parameters are always float32.
    relative_attention_num_buckets: Buckets of the relative-position bias (T5X default 32).
    relative_attention_max_distance: Distance beyond which relative positions share a bucket.
  """

  vocab_size: int
  emb_dim: int
  num_heads: int
  num_encoder_layers: int
  num_decoder_layers: int
  head_dim: int
  mlp_dim: int
  mlp_activations: Sequence[str] = ("gelu", "linear")
  dropout_rate: float = 0.0
  logits_via_embedding: bool = False
  dtype: str = "float32"
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128

  def __post_init__(self):
    # Freeze lists (from json or gin) into tuples so the config stays hashable for jit.
    object.__setattr__(self, "mlp_activations", tuple(self.mlp_activations))
    for name in ("vocab_size", "emb_dim", "num_heads", "num_encoder_layers",
                 "num_decoder_layers", "head_dim", "mlp_dim",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"T5Config.{name} must be an int, got {value!r}")
      if value <= 0:
        raise ValueError(f"T5Config.{name} must be positive, got {value}")
    if not self.mlp_activations:
      raise ValueError("T5Config.mlp_activations must name at least one activation")
    for act in self.mlp_activations:
      if act not in _ACTIVATIONS:
        raise ValueError(
            f"T5Config.mlp_activations: unknown activation {act!r}; known: {_ACTIVATIONS}")
    if not 0.0 <= float(self.dropout_rate) < 1.0:
      raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate}")
    object.__setattr__(self, "dtype", canonical_dtype(self.dtype))
    if not isinstance(self.logits_via_embedding, bool):
      raise TypeError(
          f"T5Config.logits_via_embedding must be a bool, got {self.logits_via_embedding!r}")
    if self.relative_attention_num_buckets < 2:
      raise ValueError("T5Config.relative_attention_num_buckets must be at least 2")

  @property
  def num_params(self) -> int:
    """Number of parameters of a model with this config."""
    e, h, d, m, v = self.emb_dim, self.num_heads, self.head_dim, self.mlp_dim, self.vocab_size
    attention = 4 * e * h * d
    mlp = len(self.mlp_activations) * e * m + m * e
    encoder = self.num_encoder_layers * (attention + mlp + 2 * e) + e
    decoder = self.num_decoder_layers * (2 * attention + mlp + 3 * e) + e
    relpos = 2 * h * self.relative_attention_num_buckets
    logits = 0 if self.logits_via_embedding else e * v
    return v * e + encoder + decoder + relpos + logits

  def replace(self, **overrides: Any) -> "T5Config":
    return dataclasses.replace(self, **overrides)

  @classmethod
  def preset(cls, name: str, **overrides: Any) -> "T5Config":
    """A published T5X configuration, e.g. `T5Config.preset('t5_1_1_small', dtype='float32')`."""
    if name not in PRESETS:
      raise ValueError(f"Unknown T5Config preset {name!r}; known presets: {sorted(PRESETS)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise TypeError(f"T5Config.preset: unknown field(s) {sorted(unknown)}")
    return cls(**{**PRESETS[name], **overrides})


def canonical_dtype(dtype: Any) -> str:
  """'float32' / 'bfloat16' / 'float16' for that string or any numpy/jax dtype-like naming it.

  Raises:
    ValueError: (naming `T5Config.dtype`) for any other dtype or string.
    TypeError: (naming `T5Config.dtype`) for an object that is not a dtype at all.
  """
  if isinstance(dtype, str):
    name = dtype
  else:
    import numpy as np  # pylint: disable=g-import-not-at-top
    try:
      name = np.dtype(dtype).name
    except TypeError as e:
      raise TypeError(f"T5Config.dtype must be one of {_DTYPES} (a string or a dtype), got "
                      f"{dtype!r}") from e
  if name not in _DTYPES:
    raise ValueError(f"T5Config.dtype must be one of {_DTYPES}, got {dtype!r}")
  return name


def _t5_1_1(emb_dim, num_heads, num_layers, mlp_dim):
  return dict(vocab_size=32128, emb_dim=emb_dim, num_heads=num_heads,
              num_encoder_layers=num_layers, num_decoder_layers=num_layers, head_dim=64,
              mlp_dim=mlp_dim, mlp_activations=("gelu", "linear"), dropout_rate=0.0,
              logits_via_embedding=False, dtype="bfloat16")


def _t5_1_0(emb_dim, num_heads, num_layers, mlp_dim):
  return dict(vocab_size=32128, emb_dim=emb_dim, num_heads=num_heads,
              num_encoder_layers=num_layers, num_decoder_layers=num_layers, head_dim=64,
              mlp_dim=mlp_dim, mlp_activations=("relu",), dropout_rate=0.0,
              logits_via_embedding=True, dtype="bfloat16")


# The values of T5X's `t5x/examples/t5/t5_1_{0,1}/*.gin`.
PRESETS = {
    "t5_1_1_small": _t5_1_1(512, 6, 8, 1024),
    "t5_1_1_base": _t5_1_1(768, 12, 12, 2048),
    "t5_1_1_large": _t5_1_1(1024, 16, 24, 2816),
    "t5_1_1_xl": _t5_1_1(2048, 32, 24, 5120),
    "t5_1_1_xxl": _t5_1_1(4096, 64, 24, 10240),
    "t5_1_0_small": _t5_1_0(512, 8, 6, 2048),
    "t5_1_0_base": _t5_1_0(768, 12, 12, 3072),
}
