"""Reads the `network.T5Config` bindings of T5X model gin files, with gin's own parser.

`config_from_gin(path)` reads a T5X model gin file such as T5X's `t5x/examples/t5/t5_1_1/small.gin`
into a `T5Config`. The text is parsed by gin-config's `gin.config_parser.ConfigParser`, which turns
a file into statements (bindings, block declarations and their bindings, imports, includes) with
no configurable registered: a small `ParserDelegate` keeps `%MACRO` and `@reference` values as
markers. This module follows the includes, collects the macros and the `T5Config` bindings in
file order (a later binding overriding an earlier one, as in gin) and evaluates them. Neither t5x
nor any module a gin file imports (`seqio`, `t5x.adafactor`, ...) is imported.

It stands above `specdec.config` (which knows nothing of gin); `specdec.t5x_import` reads the
checkpoints these configs describe.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import re
import tokenize
from typing import Any

from gin import config_parser

from specdec.config import T5Config

_LOG = logging.getLogger(__name__)

# T5X's `t5x/examples/t5/network.py` T5Config defaults, used for fields a gin file leaves unbound
# (they differ from specdec's T5Config defaults: T5X's default MLP is ('relu',)).
_T5X_DEFAULTS = {
    "dtype": "float32", "emb_dim": 512, "num_heads": 8, "num_encoder_layers": 6,
    "num_decoder_layers": 6, "head_dim": 64, "mlp_dim": 2048, "mlp_activations": ("relu",),
    "dropout_rate": 0.1, "logits_via_embedding": False,
}
# T5X T5Config fields that specdec has no field for; accepted only with the value that specdec's
# network computes (T5X's default).
_T5X_ONLY_FIELDS = {"float32_attention_logits": False}
_FIELDS = {f.name for f in dataclasses.fields(T5Config)}
_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
                "f32": "float32", "bf16": "bfloat16", "f16": "float16", "fp32": "float32",
                "fp16": "float16"}
_DTYPE_MODULES = ("jax.numpy.", "jnp.", "numpy.", "np.")
_MACRO_NAME_RE = re.compile(r"^[A-Za-z_]\w*$")


@dataclasses.dataclass(frozen=True)
class _Macro:
  """`%NAME` in a value."""
  name: str


@dataclasses.dataclass(frozen=True)
class _Reference:
  """`@name` (or `@name()` when `evaluate`) in a value."""
  name: str
  evaluate: bool

  def __str__(self):
    return f"@{self.name}" + ("()" if self.evaluate else "")


class _Delegate(config_parser.ParserDelegate):
  """Keeps macros and configurable references as markers; nothing needs to be registered."""

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return _Reference(scoped_configurable_name, evaluate)

  def macro(self, macro_name):
    return _Macro(macro_name)


@dataclasses.dataclass(frozen=True)
class _Bound:
  value: Any  # As parsed: Python literals, possibly holding _Macro / _Reference markers.
  where: str  # 'file:line', or 'override'.


def _is_t5config(scope: str, selector: str) -> bool:
  # 'network.T5Config', 't5x.examples.t5.network.T5Config' or 'T5Config'; scoped ones
  # ('encoder/network.T5Config') are not the model's config.
  return not scope and selector.split(".")[-1] == "T5Config"


def _find_include(include: str, gin_path: str) -> str | None:
  """An included file: absolute, or relative to the gin file's folder or any folder above it
  (T5X's includes are relative to the t5x repository root, e.g. 't5x/examples/t5/...')."""
  if os.path.isabs(include):
    return include if os.path.isfile(include) else None
  folder = os.path.dirname(os.path.abspath(gin_path))
  while True:
    candidate = os.path.join(folder, include)
    if os.path.isfile(candidate):
      return candidate
    parent = os.path.dirname(folder)
    if parent == folder:
      return None
    folder = parent


def _statements(path: str, text: str) -> list[Any]:
  """gin's statements for the file, a ValueError naming the file and line if it cannot parse."""
  parser = config_parser.ConfigParser(text, _Delegate())
  try:
    return list(parser)
  except SyntaxError as e:  # gin's errors (and tokenize's IndentationError) carry the line.
    message = " ".join(str(e.msg).split())  # gin's messages may span lines.
    raise ValueError(f"Cannot parse gin file {path}:{e.lineno}: {message}") from e
  except tokenize.TokenError as e:  # The file ends inside a bracket or a continued line.
    line = _unclosed_bracket_line(text)
    if line is not None:
      raise ValueError(f"Cannot parse gin file {path}:{line}: unclosed bracket") from e
    line = e.args[1][0] if len(e.args) > 1 else "?"
    raise ValueError(f"Cannot parse gin file {path}:{line}: {e.args[0]}") from e
  except ValueError as e:  # E.g. a selector gin rejects outright.
    raise ValueError(f"Cannot parse gin file {path}: {e}") from e


def _unclosed_bracket_line(text: str) -> int | None:
  """The line of the outermost bracket that `text` never closes (None if there is none)."""
  opened: list[int] = []
  try:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
      if token.type == tokenize.OP and token.string in "([{":
        opened.append(token.start[0])
      elif token.type == tokenize.OP and token.string in ")]}" and opened:
        opened.pop()
  except tokenize.TokenError:
    pass
  return opened[0] if opened else None


def _read(path: str, macros: dict[str, _Bound], fields: dict[str, _Bound],
          seen: tuple[str, ...] = ()) -> None:
  """Adds the macros and T5Config bindings of `path` (and of the files it includes, where they are
  included) in file order, later ones overriding earlier ones as in gin."""
  if not os.path.isfile(path):
    raise ValueError(f"Gin file not found: {path}")
  if os.path.abspath(path) in seen:
    raise ValueError(f"Gin file {path} includes itself (via {' -> '.join(seen)})")
  seen = seen + (os.path.abspath(path),)
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f"Cannot read gin file {path}: {e}") from e
  for statement in _statements(path, text):
    where = f"{path}:{statement.location.line_num}"
    if isinstance(statement, config_parser.IncludeStatement):
      found = _find_include(statement.filename, path)
      if found is None:
        _LOG.warning("%s: ignoring include %r (no such file relative to the gin file or the "
                     "folders above it)", where, statement.filename)
      else:
        _read(found, macros, fields, seen)
    elif isinstance(statement, config_parser.BindingStatement):
      if not statement.arg_name:  # `NAME = value` (or `scope/NAME = value`): a macro.
        name = "/".join(p for p in (statement.scope, statement.selector) if p)
        macros[name] = _Bound(statement.value, where)
      elif _is_t5config(statement.scope, statement.selector):
        fields[statement.arg_name] = _Bound(statement.value, where)
      # Other bindings (optimizer, vocabulary, ...) do not concern the network config.
    # `from __gin__ import dynamic_registration`, `import t5x.examples...` and block
    # declarations (whose bindings follow as BindingStatements) need nothing.


def _evaluate(value: Any, where: str, macros: dict[str, _Bound], field: str,
              stack: tuple[str, ...] = ()) -> Any:
  """The value with every macro replaced by its own (evaluated) value."""
  if isinstance(value, _Macro):
    name = value.name
    if name in stack:
      raise ValueError(f"{where}: macro %{name} refers to itself")
    if name == "gin.REQUIRED":
      # T5X's model files leave some macros to the run's file: `DROPOUT_RATE = %gin.REQUIRED`.
      needed = stack[-1] if stack else field
      raise ValueError(f"{where}: T5Config.{field} needs {needed}, which the gin files leave "
                       f"%gin.REQUIRED; pass it as an override, e.g. "
                       f"config_from_gin(path, {needed}=...)")
    if name not in macros:
      raise ValueError(f"{where}: T5Config.{field} = %{name}, but macro {name} is not defined "
                       f"in the gin file; pass it as an override, e.g. "
                       f"config_from_gin(path, {field}=...) or {name}=...")
    bound = macros[name]
    return _evaluate(bound.value, bound.where, macros, field, stack + (name,))
  if isinstance(value, _Reference):
    # `@jnp.bfloat16` (a constant under dynamic registration) names a dtype; nothing else here
    # refers to a configurable that specdec could call.
    if field == "dtype" and not value.evaluate and value.name.startswith(_DTYPE_MODULES):
      return value.name
    raise ValueError(f"{where}: T5Config.{field} = {value}: configurable references are not "
                     "supported here; give a literal value")
  if isinstance(value, (tuple, list)):
    return type(value)(_evaluate(v, where, macros, field, stack) for v in value)
  if isinstance(value, dict):
    return {k: _evaluate(v, where, macros, field, stack) for k, v in value.items()}
  return value


def _map_dtype(value: Any, where: str) -> str:
  name = str(value)
  for prefix in _DTYPE_MODULES:
    if name.startswith(prefix):
      name = name[len(prefix):]
  if name not in _DTYPE_NAMES:
    raise ValueError(f"{where}: unsupported T5Config.dtype {value!r}; supported: "
                     "'float32', 'bfloat16', 'float16'")
  return _DTYPE_NAMES[name]


def config_from_gin(path: str, **overrides: Any) -> T5Config:
  """Reads the `network.T5Config.*` bindings of a T5X model gin file.

  The file is parsed by gin's own parser, so everything T5X's model gin files use works:
  `network.T5Config:` blocks of indented `key = value` lines, `network.T5Config.key = value`
  lines, macros (`NAME = value`, referenced as `%NAME`), comments, values spanning lines,
  `from __gin__ import dynamic_registration` and other imports (read, never executed), and
  `include` lines (followed when the file exists relative to the gin file or a folder above it,
  e.g. the t5x repository root for `include 't5x/examples/t5/t5_1_1/base.gin'`; otherwise skipped
  with a warning). T5Config values are Python literals (numbers, strings, tuples, True/False) or
  macros; a dtype may also be written `@jnp.bfloat16`.

  Fields the file leaves unbound take T5X's `network.T5Config` defaults (e.g. ('relu',)
  activations), not specdec's.

  Args:
    path: The gin file.
    **overrides: T5Config fields (`dropout_rate=0.0`) or macros (`DROPOUT_RATE=0.0`) to set,
      taking precedence over the file.

  Returns:
    The T5Config.

  Raises:
    ValueError: naming the file (and line) if it does not exist or cannot be parsed, and naming
      the keys if it binds T5Config fields specdec does not know, or a value refers to an
      undefined macro.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise TypeError(f"path must be a path to a gin file, got {type(path).__name__}")
  path = os.fspath(path)
  macros: dict[str, _Bound] = {}
  fields: dict[str, _Bound] = {}
  _read(path, macros, fields)

  field_overrides = {}
  unknown_overrides = []
  for key, value in overrides.items():
    if key in _FIELDS or key in _T5X_ONLY_FIELDS:
      field_overrides[key] = value
    elif _MACRO_NAME_RE.match(key) and key.upper() == key:
      macros[key] = _Bound(value, "override")
    else:
      unknown_overrides.append(key)
  if unknown_overrides:
    raise ValueError(f"config_from_gin: unknown override(s) {sorted(unknown_overrides)}: not "
                     f"T5Config fields ({sorted(_FIELDS)}) nor macro names (UPPER_CASE)")

  unknown = sorted(k for k in fields if k not in _FIELDS and k not in _T5X_ONLY_FIELDS)
  if unknown:
    raise ValueError(f"{path}: unknown T5Config key(s) {unknown} "
                     f"(at {', '.join(fields[k].where for k in unknown)}); known: "
                     f"{sorted(_FIELDS)}")

  values = dict(_T5X_DEFAULTS)
  where = {}
  for key, bound in fields.items():
    if key in field_overrides:
      continue
    values[key] = _evaluate(bound.value, bound.where, macros, key)
    where[key] = bound.where
  values.update(field_overrides)

  for key, supported in _T5X_ONLY_FIELDS.items():
    if key in values:
      if values.pop(key) != supported:
        raise ValueError(f"{where.get(key, 'override')}: T5Config.{key} is not supported by "
                         f"specdec (only {supported!r})")
  if "dtype" in values:
    values["dtype"] = _map_dtype(values["dtype"], where.get("dtype", "override"))
  if "vocab_size" not in values:
    raise ValueError(f"{path}: T5Config.vocab_size is not bound (T5X has no default for it); "
                     "bind it in the gin file or pass vocab_size=...")
  if isinstance(values.get("mlp_activations"), str):
    values["mlp_activations"] = (values["mlp_activations"],)
  try:
    if "dropout_rate" in values:
      values["dropout_rate"] = float(values["dropout_rate"])
    return T5Config(**values)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: invalid T5Config: {e}") from e
