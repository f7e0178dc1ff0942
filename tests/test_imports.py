"""The package's layering: a core that imports alone, and no import cycles.

The core (interpolation, schemes, workers, straggler masks, the pipeline)
imports only jax and numpy; the heavier layers load Flax, Optax, Orbax,
ml_collections, scikit-learn, Ray and matplotlib on use. The cycle check
reads every module's imports from its source (module level and inside
functions; ``if TYPE_CHECKING:`` blocks excluded, they never run) and counts
``from a.b import c`` as importing ``a``, ``a.b`` and, when it is a module,
``a.b.c``: importing a submodule runs its packages' ``__init__`` first, so
``training.coder`` importing ``comparison.metrics`` while ``comparison``
imports ``training`` is a cycle. A module's edges to its own ancestor
packages are left out: those are always already being imported when it runs.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxcoded"
HEAVY = ("flax", "optax", "orbax", "ml_collections", "tqdm", "sklearn", "ray", "matplotlib",
         "tensorflow", "tensorflow_datasets", "absl")
CORE = ("jaxcoded", "jaxcoded.interp", "jaxcoded.schemes", "jaxcoded.workers",
        "jaxcoded.stragglers", "jaxcoded.deployment", "jaxcoded.queries", "jaxcoded.robust",
        "jaxcoded.linalg", "jaxcoded.validation", "jaxcoded.adversaries", "jaxcoded.load")


def _heavy_after_import(modules: tuple[str, ...]) -> list[str]:
  code = (f"import sys\nimport {', '.join(modules)}\n"
          f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
  return result.stdout.split()


def test_core_imports_only_jax_and_numpy():
  assert _heavy_after_import(CORE) == []


def test_the_check_sees_heavy_packages():  # the test above can fail
  assert "flax" in _heavy_after_import(("jaxcoded.models",))


def _module_names() -> dict[str, pathlib.Path]:
  names = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    names[".".join(parts)] = path
  return names


def _is_type_checking(node: ast.If) -> bool:
  test = node.test
  return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
      isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: pathlib.Path, module: str, known: set[str]) -> set[str]:
  """Every jaxcoded module that importing ``module`` may import (see the module docstring)."""
  tree = ast.parse(path.read_text())
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  found: set[str] = set()

  def add(name: str) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
      prefix = ".".join(parts[:i])
      if prefix in known:
        found.add(prefix)

  def visit(node: ast.AST) -> None:
    if isinstance(node, ast.If) and _is_type_checking(node):
      for child in node.orelse:
        visit(child)
      return
    if isinstance(node, ast.Import):
      for alias in node.names:
        add(alias.name)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      add(base)
      for alias in node.names:
        add(f"{base}.{alias.name}")
    for child in ast.iter_child_nodes(node):
      visit(child)

  visit(tree)
  parts = module.split(".")
  ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
  return found - ancestors


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  cycles, state, stack = [], {}, []

  def dfs(node: str) -> None:
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        dfs(nxt)
    stack.pop()
    state[node] = "done"

  for node in sorted(graph):
    if node not in state:
      dfs(node)
  return cycles


def test_no_import_cycles():
  modules = _module_names()
  graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
  assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
  graph = {"a": {"a.b"}, "a.b": {"c"}, "c": {"a"}}
  assert _cycles(graph) == [["a", "a.b", "c", "a"]]


@pytest.mark.parametrize("source, expected", [
    ("from jaxcoded.schemes import base", {"jaxcoded.schemes", "jaxcoded.schemes.base"}),
    ("def f():\n  import jaxcoded.data", {"jaxcoded.data"}),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  from jaxcoded import data", set()),
])
def test_imports_are_read_at_every_level(tmp_path, source, expected):
  path = tmp_path / "m.py"
  path.write_text(source)
  known = set(_module_names())
  assert _imports(path, "jaxcoded.somewhere.m", known) == expected
