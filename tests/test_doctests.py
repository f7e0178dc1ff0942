"""Every ``>>>`` example in the library runs as a doctest, one case per module.

The modules are found by walking ``jaxcoded/`` on disk (collection imports
nothing, so pytest-xdist workers start fast); each case imports its module and
runs the examples that ``doctest.DocTestFinder`` finds there, with ELLIPSIS and
NORMALIZE_WHITESPACE, in the module's globals (as ``python -m doctest`` does).

The examples are written for JAX's default configuration, as a user runs them:
tests/conftest.py turns 64-bit types on for the whole suite, so each case turns
them off while its examples run (``jax.enable_x64(False)``), and an example
that prints ``dtype=float32`` means what it says.

A case also fails when its module's source holds more ``>>>`` lines than the
finder ran: an example in a comment, a nested function or another place that
doctest does not reach is never run, and soon wrong.

Modules that need an optional package (Ray for ``jaxcoded.serving``) are
skipped, with the reason, only when that package is not installed.
"""

import doctest
import importlib
import importlib.util
import pathlib
import re

import jax
import pytest

# Found, not imported: a module that fails to import fails its own case only.
_PACKAGE_DIR = pathlib.Path(importlib.util.find_spec("jaxcoded").submodule_search_locations[0])

# Module-name prefix -> the optional packages its modules import.
_OPTIONAL = {
    "jaxcoded.serving": ("ray",),
}

_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# A line that starts an example: doctest's own pattern (indent, then ">>> " or
# a bare ">>>" at the end of the line).
_PROMPT = re.compile(r"^\s*>>>( |$)", re.MULTILINE)


def _module_names() -> list[str]:
  """Every module of the package, from its files (nothing is imported)."""
  names = []
  for path in sorted(_PACKAGE_DIR.rglob("*.py")):
    parts = path.relative_to(_PACKAGE_DIR.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    names.append(".".join(parts))
  return names


def _missing_optional(name: str) -> list[str]:
  missing = []
  for prefix, packages in _OPTIONAL.items():
    if name == prefix or name.startswith(prefix + "."):
      missing += [p for p in packages if importlib.util.find_spec(p) is None]
  return missing


def _source_prompts(module) -> int:
  return len(_PROMPT.findall(pathlib.Path(module.__file__).read_text(encoding="utf-8")))


def test_modules_are_found():
  names = _module_names()
  assert "jaxcoded" in names and "jaxcoded.workers" in names, names
  assert all(n.startswith("jaxcoded") for n in names), names


def _run(module, name: str) -> tuple[int, str]:
  """Runs the module's examples; returns (examples that failed, doctest's report)."""
  tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
  examples = sum(len(t.examples) for t in tests)
  prompts = _source_prompts(module)
  assert examples == prompts, (
      f"{module.__file__} has {prompts} '>>>' lines, but doctest finds only {examples} examples "
      "in its docstrings: move the others into a docstring that doctest reaches (module, "
      "class, function or method), or drop the prompt.")
  output = []
  runner = doctest.DocTestRunner(optionflags=_FLAGS, verbose=False)
  with jax.enable_x64(False):
    for test in sorted(tests, key=lambda t: t.name):
      runner.run(test, out=output.append, clear_globs=True)
  return runner.failures, "".join(output)


@pytest.mark.parametrize("name", _module_names())
def test_doctests(name):
  missing = _missing_optional(name)
  if missing:
    pytest.skip(f"{name} needs the optional package(s) {', '.join(missing)}, not installed")
  failed, report = _run(importlib.import_module(name), name)
  assert failed == 0, f"{failed} doctest example(s) failed in {name}:\n{report}"


def _module_from(path: pathlib.Path, source: str):
  path.write_text(source, encoding="utf-8")
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_runner_reports_a_wrong_example_and_restores_x64(tmp_path):
  x64 = jax.config.jax_enable_x64
  module = _module_from(tmp_path / "wrong_example.py", '''"""A module.

  >>> import jax.numpy as jnp
  >>> jnp.arange(3.0)
  Array([0., 1., 2.], dtype=float32)
  >>> 1 + 1
  3
  """
  '''.replace("\n  ", "\n"))
  failed, report = _run(module, "wrong_example")
  assert failed == 1, report  # the float32 example passes with 64-bit types off
  assert "Expected:\n    3\nGot:\n    2" in report, report
  assert jax.config.jax_enable_x64 == x64


def test_runner_refuses_an_example_doctest_cannot_reach(tmp_path):
  module = _module_from(tmp_path / "unreached.py", '''"""A module."""

  def f():
    def g():
      """Nested: doctest never looks here.

      >>> 1 + 1
      2
      """
    return g
  '''.replace("\n  ", "\n"))
  with pytest.raises(AssertionError, match="has 1 '>>>' lines, but doctest finds only 0"):
    _run(module, "unreached")
