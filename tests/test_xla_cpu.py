"""specdec.xla_cpu: when `import specdec` adds the CPU dot flag to XLA_FLAGS, and when not."""

import os
import subprocess
import sys

import pytest

from specdec import xla_cpu

NEW = (0, 10)


@pytest.mark.parametrize("existing, environ, version, expected", [
    ("", {}, NEW, xla_cpu.FLAG),
    ("--xla_cpu_multi_thread_eigen=false", {}, NEW,
     f"--xla_cpu_multi_thread_eigen=false {xla_cpu.FLAG}"),
    # The user's own setting of the flag wins, whatever it is.
    ("--xla_cpu_experimental_ynn_fusion_type=dot", {}, NEW,
     "--xla_cpu_experimental_ynn_fusion_type=dot"),
    ("", {"SPECDEC_XLA_CPU_DEFAULTS": "0"}, NEW, ""),
    ("", {"SPECDEC_XLA_CPU_DEFAULTS": "1"}, NEW, xla_cpu.FLAG),
    # jaxlib 0.8 does not know the flag (XLA aborts on unknown flags) and does not offload dots.
    ("", {}, (0, 8), ""),
    ("", {}, (0, 9), xla_cpu.FLAG),
])
def test_flags_with_cpu_defaults(existing, environ, version, expected):
  assert xla_cpu.flags_with_cpu_defaults(existing, environ=environ,
                                         jaxlib_version=version) == expected


def test_jaxlib_version_parses_the_installed_one():
  import jaxlib
  version = xla_cpu._jaxlib_version()
  assert len(version) == 2 and version == tuple(int(p) for p in jaxlib.__version__.split(".")[:2])


def test_configure_changes_nothing_once_backends_started():
  import jax
  jax.devices()  # This process's backends are up (the test session's).
  environ = {}
  assert not xla_cpu.configure(environ)
  assert environ == {}


def _flags_after_import(**env) -> str:
  code = ("import os, specdec, jax; jax.devices(); "
          "print(repr(os.environ.get('XLA_FLAGS')))")
  base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, check=True,
                       capture_output=True, text=True, timeout=120)
  return out.stdout.strip().splitlines()[-1]


def test_import_specdec_sets_the_flag_before_the_backend_starts():
  if xla_cpu._jaxlib_version() < xla_cpu.MIN_JAXLIB:
    pytest.skip("jaxlib too old for the flag")
  assert _flags_after_import() == repr(xla_cpu.FLAG)
  assert _flags_after_import(SPECDEC_XLA_CPU_DEFAULTS="0") == "None"
  assert _flags_after_import(XLA_FLAGS="--xla_cpu_use_thunk_runtime=true") == repr(
      f"--xla_cpu_use_thunk_runtime=true {xla_cpu.FLAG}")


def test_decoding_under_specdecs_own_defaults_is_greedy_identical():
  """The suite runs with XLA's default dots (conftest); users get Eigen's: decode under those."""
  code = """
import os, numpy as np, specdec
from specdec import T5Model
from specdec.testing import TINY, TINY_DRAFT, ragged_prompts
assert os.environ["XLA_FLAGS"].endswith(specdec.xla_cpu.FLAG) or specdec.xla_cpu._jaxlib_version() < specdec.xla_cpu.MIN_JAXLIB
target, draft = T5Model.init(TINY, 0), T5Model.init(TINY_DRAFT, 1)
prompts = ragged_prompts(3, 6, vocab_size=TINY.vocab_size)
base = specdec.generate(target, prompts, max_decode_len=12).tokens
for gamma in (1, 3):
  spec = specdec.speculative_generate(target, draft, prompts, gamma=gamma, max_decode_len=12)
  np.testing.assert_array_equal(spec.tokens, base)
print("identical")
"""
  base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip().endswith("identical")
