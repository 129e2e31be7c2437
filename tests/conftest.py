"""Shared test setup: tiny models, CPU only, cheap compiles."""

import importlib.util
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
# XLA's default CPU dots (YNNPACK) compile ~15% faster than the Eigen ones `import specdec`
# selects for speed (specdec.xla_cpu), and compile time is most of this suite; the kernels
# change rounding only. tests/test_xla_cpu.py runs decoding under specdec's own defaults.
os.environ.setdefault("SPECDEC_XLA_CPU_DEFAULTS", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

# XLA compile time dominates these tests; optimisations buy nothing on tiny models.
jax.config.update("jax_disable_most_optimizations", True)

from specdec import T5Model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
  """scripts/<name>.py as a module, loaded once per session: the scripts register gin
  configurables and absl flags at import, which may not happen twice in one process."""
  module_name = f"specdec_script_{name}"
  if module_name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        module_name, os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Before running it, as `import` does (dataclasses need it).
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[module_name]
      raise
  return sys.modules[module_name]


from specdec.testing import TINY, TINY_DRAFT  # noqa: E402,F401  (re-exported to the tests)


@pytest.fixture(scope="session")
def tiny_target() -> T5Model:
  return T5Model.init(TINY, 0)


@pytest.fixture(scope="session")
def tiny_draft() -> T5Model:
  return T5Model.init(TINY_DRAFT, 1)
