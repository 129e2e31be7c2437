"""XLA's CPU matmuls for decoding: dots through Eigen rather than YNNPACK.

Speculative decoding needs a (γ+1)-token target pass to cost little more than a 1-token one
(the verify cost v(γ); the paper assumes v = 1). Recent jaxlib offloads dots on the CPU to
YNNPACK, whose kernels for a few rows are slow next to its 1-row one: with the shipped 48M
target on a 2-core EPYC, a 6-8 token pass costs v(5..7) = 2.2-3.5 steps through YNNPACK and
1.55-1.7 through Eigen, at the same 1-token step (7-10 ms); numbers and the command in
results/xla_cpu_dots/. Eigen is XLA's older path: jaxlib 0.8 has no YNNPACK fusions at all.

`configure()` appends `--xla_cpu_experimental_ynn_fusion_type=` (offload nothing to
YNNPACK) to `XLA_FLAGS`; `import specdec` calls it. It changes which kernels run, never what
is computed beyond float rounding (`generate` and the verify pass both use them). It leaves
`XLA_FLAGS` alone when:

* `SPECDEC_XLA_CPU_DEFAULTS=0` is set (the opt-out);
* `XLA_FLAGS` already sets `xla_cpu_experimental_ynn_fusion_type` (the user's choice wins);
* jaxlib is older than 0.9, whose XLA may not know the flag (an unknown flag aborts XLA);
* JAX's backends have already started: XLA reads `XLA_FLAGS` once, so the flag could no longer
  take effect (import specdec before running anything with JAX, as the scripts do).

Only the CPU client reads the flag; GPU and TPU computations are unaffected.
"""

from __future__ import annotations

import os
from typing import MutableMapping

YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"
FLAG = f"--{YNN_FLAG}="  # An empty list: no YNNPACK fusions (dots go to Eigen).
OPT_OUT = "SPECDEC_XLA_CPU_DEFAULTS"
MIN_JAXLIB = (0, 9)


def _jaxlib_version() -> tuple[int, ...]:
  import jaxlib  # pylint: disable=g-import-not-at-top
  parts = []
  for piece in jaxlib.__version__.split(".")[:2]:
    digits = "".join(ch for ch in piece if ch.isdigit())
    parts.append(int(digits or 0))
  return tuple(parts)


def _backends_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  return xla_bridge.backends_are_initialized()


def flags_with_cpu_defaults(existing: str, *, environ: MutableMapping[str, str] | None = None,
                            jaxlib_version: tuple[int, ...] | None = None) -> str:
  """`existing` XLA_FLAGS with `FLAG` appended where `configure` would append it."""
  environ = os.environ if environ is None else environ
  if environ.get(OPT_OUT, "1").strip() == "0" or YNN_FLAG in existing:
    return existing
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if version < MIN_JAXLIB:
    return existing
  return f"{existing} {FLAG}".strip()


def configure(environ: MutableMapping[str, str] | None = None) -> bool:
  """Applies the CPU defaults to `environ` (default `os.environ`); True if XLA_FLAGS changed."""
  environ = os.environ if environ is None else environ
  existing = environ.get("XLA_FLAGS", "")
  value = flags_with_cpu_defaults(existing, environ=environ)
  if value == existing or _backends_started():
    return False
  environ["XLA_FLAGS"] = value
  return True

