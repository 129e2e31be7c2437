"""specdec's modules import, and import one another without a circle.

The graph is read from the source: every `import specdec.x` / `from specdec(.x) import ...`,
at module level or inside a function. A function-level import that only breaks a circle at
import time still counts: each module must stand above what it uses.
"""

import ast
import importlib
import os

import pytest

import specdec

PACKAGE_DIR = os.path.dirname(os.path.abspath(specdec.__file__))
MODULES = sorted(f"specdec.{name[:-3]}" for name in os.listdir(PACKAGE_DIR)
                 if name.endswith(".py") and name != "__init__.py")


def _imported_modules(module: str) -> set[str]:
  """The specdec modules that `module`'s source imports (anywhere in it)."""
  path = os.path.join(PACKAGE_DIR, module.split(".", 1)[1] + ".py")
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from specdec import x` imports the module specdec.x when there is one.
      names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    elif isinstance(node, ast.ImportFrom):  # Relative imports: specdec uses none; resolve anyway.
      names = [f"specdec.{node.module}" if node.module else "specdec"] + [
          f"specdec.{alias.name}" for alias in node.names]
    else:
      continue
    found.update(name for name in names if name in MODULES and name != module)
  return found


def import_graph() -> dict[str, set[str]]:
  return {module: _imported_modules(module) for module in MODULES}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for succ in sorted(graph[node]):
      if succ not in index:
        visit(succ)
        low[node] = min(low[node], low[succ])
      elif succ in on_stack:
        low[node] = min(low[node], index[succ])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return sorted(out)


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports(module):
  try:
    importlib.import_module(module)
  except ModuleNotFoundError as e:  # An optional dependency (seqio, torch) that is not here.
    if e.name and not e.name.startswith("specdec"):
      pytest.skip(f"{module} needs {e.name}")
    raise


def test_the_graph_sees_lazy_imports():
  graph = import_graph()
  # Module level, `from specdec import x`, and inside a function (pretrained imports data there).
  assert "specdec.config" in graph["specdec.model"]
  assert "specdec.sampling" in graph["specdec.decoding"]
  assert "specdec.data" in graph["specdec.pretrained"]
  # The circle finder finds a circle through a function-level import.
  assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
  found = circles(import_graph())
  assert not found, f"import circles among specdec's modules: {found}"
