"""Gin at the script boundary, T5X style: `--gin_file=...` and `--gin.KEY=VALUE` flags.

T5X scripts accept `--gin.MODEL_DIR="'/tmp/x'"`; absl cannot define a flag per gin key, so
(as T5X's `gin_utils.rewrite_gin_args` does) such arguments are rewritten into
`--gin_bindings='KEY = VALUE'` before absl parses the command line.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GIN_FILES = flags.DEFINE_multi_string(
    "gin_file", [], "Gin files to parse, in order (relative to the cwd or the repo root).")
GIN_BINDINGS = flags.DEFINE_multi_string(
    "gin_bindings", [], "Gin bindings; `--gin.KEY=VALUE` is shorthand for one.")


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
  """`--gin.KEY=VALUE` → `--gin_bindings=KEY = VALUE`; other arguments pass unchanged."""
  out = []
  for arg in argv:
    if arg.startswith("--gin."):
      if "=" not in arg:
        raise ValueError(f"gin binding {arg!r} needs the form --gin.KEY=VALUE")
      key, value = arg[len("--gin."):].split("=", 1)
      out.append(f"--gin_bindings={key} = {value}")
    else:
      out.append(arg)
  return out


def resolve_gin_file(path: str) -> str:
  """The gin file at `path` (cwd first, then the repo root); ValueError naming it if absent."""
  for candidate in (path, os.path.join(REPO_ROOT, path)):
    if os.path.isfile(candidate):
      return candidate
  raise ValueError(f"gin file not found: {path}")


def parse(gin_files: Sequence[str], bindings: Sequence[str]) -> None:
  """Parses the files (checked to exist first) and then the bindings."""
  files = [resolve_gin_file(f) for f in gin_files]
  gin.add_config_file_search_path(REPO_ROOT)
  gin.parse_config_files_and_bindings(files, list(bindings), finalize_config=False)


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)` that accepts T5X's `--gin.KEY=VALUE` flags and parses gin before main."""
  def parse_flags(argv):
    return flags.FLAGS(rewrite_gin_args(argv))

  def main_with_gin(argv):
    logging.set_verbosity(logging.WARNING)  # orbax and seqio log every read at INFO.
    parse(GIN_FILES.value, GIN_BINDINGS.value)
    return main(argv)

  app.run(main_with_gin, flags_parser=parse_flags)
