"""Shared test setup: tiny models, CPU only, cheap compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import jax  # noqa: E402
import pytest  # noqa: E402

# XLA compile time dominates these tests; optimisations buy nothing on tiny models.
jax.config.update("jax_disable_most_optimizations", True)

from specdec import T5Config, T5Model  # noqa: E402

TINY = T5Config(vocab_size=32, emb_dim=16, num_heads=2, num_encoder_layers=1,
                num_decoder_layers=2, head_dim=8, mlp_dim=24)
TINY_DRAFT = TINY.replace(emb_dim=8, num_decoder_layers=1, head_dim=4, mlp_dim=12,
                          mlp_activations=("relu",), logits_via_embedding=True)


@pytest.fixture(scope="session")
def tiny_target() -> T5Model:
  return T5Model.init(TINY, 0)


@pytest.fixture(scope="session")
def tiny_draft() -> T5Model:
  return T5Model.init(TINY_DRAFT, 1)
