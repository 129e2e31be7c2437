#!/usr/bin/env python3
"""Converts a T5X checkpoint into specdec's own checkpoint format (`T5Model.save`).

Reads the model parameters (`target.*`) of a T5X checkpoint folder (the optimizer state is left
alone), checks them against the config, and writes `OUTPUT_DIR/config.json` plus the parameters
(float32, orbax) under `OUTPUT_DIR/params`, which `specdec.T5Model.load(OUTPUT_DIR)` reads.

Usage:

  python scripts/convert_t5x.py \\
      --checkpoint_dir=gs://t5-data/pretrained_models/t5x/t5_1_1_small/checkpoint_1000000 \\
      --gin_file=t5x/examples/t5/t5_1_1/small.gin \\
      --output_dir=/tmp/t5_1_1_small

The config comes from a T5X model gin file (`--gin_file`, its `network.T5Config` bindings, with
`--gin_override=key=value` for macros such as DROPOUT_RATE or fields such as dtype) or from a
JSON file of `specdec.T5Config` fields (`--config_json`, e.g. a `config.json` that
`T5Model.save` wrote).
"""

from __future__ import annotations

import ast
import os
import sys
from typing import Sequence

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The script's own flags, not absl's global FLAGS: importing it next to other scripts (tests do)
# cannot clash with flags of the same name.
FLAGS = flags.FlagValues()
flags.DEFINE_string(
    "checkpoint_dir", None, "T5X checkpoint folder (checkpoint_<step>), local or gs://, or a "
    "folder holding exactly one such folder.", flag_values=FLAGS)
flags.DEFINE_string(
    "gin_file", None, "T5X model gin file with the network.T5Config bindings.",
    flag_values=FLAGS)
flags.DEFINE_multi_string(
    "gin_override", [], "key=value overrides for --gin_file: a T5Config field (dtype=float32) "
    "or a macro (DROPOUT_RATE=0.0). Repeatable.", flag_values=FLAGS)
flags.DEFINE_string(
    "config_json", None, "JSON file of specdec.T5Config fields (instead of --gin_file).",
    flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where to write specdec's checkpoint.",
                    flag_values=FLAGS)
flags.DEFINE_bool("progress", True, "Show a progress bar over the arrays being read.",
                  flag_values=FLAGS)


def _parse_overrides(overrides: Sequence[str]) -> dict:
  out = {}
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
      raise app.UsageError(f"--gin_override must be key=value, got {item!r}")
    try:
      out[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      out[key.strip()] = value.strip()  # A bare string such as bfloat16.
  return out


def convert(*, checkpoint_dir: str, output_dir: str, gin_file: str | None = None,
            config_json: str | None = None, gin_overrides: dict | None = None,
            progress: bool = True):
  """Reads the T5X checkpoint, writes specdec's checkpoint to `output_dir`; returns the model."""
  from specdec import T5Model  # pylint: disable=g-import-not-at-top
  from specdec import model as model_lib  # pylint: disable=g-import-not-at-top
  from specdec import t5x_gin, t5x_import  # pylint: disable=g-import-not-at-top

  if (gin_file is None) == (config_json is None):
    raise ValueError("Give exactly one of --gin_file and --config_json")
  if gin_file is not None:
    config = t5x_gin.config_from_gin(gin_file, **(gin_overrides or {}))
  else:
    if gin_overrides:
      raise ValueError("--gin_override only applies to --gin_file")
    config = model_lib.load_config(config_json)

  wrap = None
  if progress:
    import tqdm  # pylint: disable=g-import-not-at-top
    wrap = lambda leaves: tqdm.tqdm(leaves, desc="Reading T5X arrays", unit="array")
  params = t5x_import.load_params(checkpoint_dir, config, progress=wrap)
  model = T5Model.from_params(config, params, source=checkpoint_dir)
  model.save(output_dir)
  return model


def parse_flags(argv: Sequence[str]) -> list[str]:
  """Parses the command line `argv` (program name first) into FLAGS; returns what is left."""
  if any(a in ("-h", "-help", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    print(__doc__)
    print(FLAGS)
    sys.exit(0)
  FLAGS.unparse_flags()
  try:
    return FLAGS(list(argv))
  except flags.Error as e:
    raise app.UsageError(str(e)) from e


def main(argv: Sequence[str]) -> None:
  """Runs the conversion for the command line `argv` (program name first, then the flags)."""
  rest = parse_flags(argv)
  if len(rest) > 1:
    raise app.UsageError(f"Unexpected arguments: {rest[1:]}")
  for name in ("checkpoint_dir", "output_dir"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  if (FLAGS.gin_file is None) == (FLAGS.config_json is None):
    raise app.UsageError("Give exactly one of --gin_file and --config_json")
  model = convert(checkpoint_dir=FLAGS.checkpoint_dir, output_dir=FLAGS.output_dir,
                  gin_file=FLAGS.gin_file, config_json=FLAGS.config_json,
                  gin_overrides=_parse_overrides(FLAGS.gin_override), progress=FLAGS.progress)
  print(f"Wrote {model.num_params:,} parameters ({model.config}) to "
        f"{os.path.abspath(FLAGS.output_dir)}")


def _absl_defaults(argv: Sequence[str]) -> list[str]:
  flags.FLAGS(list(argv[:1]))  # absl's own flags (logging) keep their defaults.
  return list(argv)  # main parses the script's flags.


if __name__ == "__main__":
  app.run(main, flags_parser=_absl_defaults)
