"""The API reference (docs/api) builds from the docstrings with warnings as errors.

The build runs as CI would run it, in a subprocess, into a temporary directory:

  sphinx-build -W --keep-going -b html docs/api <tmp>

Any warning fails the test (a docstring that is not valid reStructuredText, a
module that fails to import, a duplicate description), and so does a public
module of the package that no page documents. Needs Sphinx (the ``docs``
extra); without it the test is skipped, and says so.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_DOCS = _ROOT / "docs" / "api"
_PACKAGE = _ROOT / "jaxcoded"
# The build imports every module (Flax, Orbax, Ray): about 30 s on a loaded
# 2-core machine. A hung import fails the test at this deadline instead of
# hanging the suite.
_DEADLINE_S = 300

_AUTOMODULE = re.compile(r"^\.\. automodule:: *(\S+)", re.MULTILINE)
_SUBMODULES = re.compile(r"^\.\. jaxcoded-submodules:: *(\S+)", re.MULTILINE)

needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None,
    reason="Sphinx is not installed (pip install 'jaxcoded[docs]')")


def _public_modules() -> set[str]:
  """Every module of the package without a private (``_``) part in its name."""
  names = set()
  for path in _PACKAGE.rglob("*.py"):
    parts = path.relative_to(_ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    if not any(p.startswith("_") for p in parts):
      names.add(".".join(parts))
  return names


def _documented_modules() -> set[str]:
  """The modules the pages name: ``automodule`` targets, and every module of a package
  whose page has a ``jaxcoded-submodules`` line (docs/api/conf.py expands it)."""
  public = _public_modules()
  names = set()
  for page in _DOCS.glob("*.rst"):
    text = page.read_text(encoding="utf-8")
    names.update(_AUTOMODULE.findall(text))
    for package in _SUBMODULES.findall(text):
      names.update(n for n in public if n.rpartition(".")[0] == package)
  return names


def test_every_public_module_has_a_page():
  missing = sorted(_public_modules() - _documented_modules())
  assert not missing, (
      f"modules without a page in docs/api: {missing}. Add an automodule for each (a new "
      "top-level module: a page docs/api/<name>.rst and a line in index.rst's toctree).")


def test_pages_name_only_existing_modules():
  unknown = sorted(n for n in _documented_modules() - _public_modules() if n != "jaxcoded")
  assert not unknown, f"docs/api pages name modules that do not exist: {unknown}"


def test_every_page_is_in_the_toctree():
  index = (_DOCS / "index.rst").read_text(encoding="utf-8")
  listed = set(re.findall(r"^   ([\w-]+)\s*$", index, re.MULTILINE))
  pages = {p.stem for p in _DOCS.glob("*.rst")} - {"index"}
  assert pages == listed, f"pages not in index.rst: {sorted(pages - listed)}; " \
                          f"listed without a page: {sorted(listed - pages)}"


@needs_sphinx
def test_api_reference_builds_without_warnings(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # the suite's 8 simulated devices are not needed here
  cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(tmp_path / "doctrees"), str(_DOCS), str(tmp_path / "html")]
  try:
    proc = subprocess.run(cmd, cwd=_ROOT, env=env, capture_output=True, text=True,
                          timeout=_DEADLINE_S, check=False)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"the API reference did not build within {_DEADLINE_S} s: {' '.join(cmd)}\n"
                f"{e.stderr or ''}")
  warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
  if proc.returncode != 0 or warnings:
    pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}; fix what it names:\n"
                + proc.stderr[-8000:])
  html = tmp_path / "html"
  for page in _DOCS.glob("*.rst"):
    assert (html / f"{page.stem}.html").is_file(), page.stem
  # Spot checks that autodoc documented objects, not only module docstrings.
  assert "jaxcoded.workers.run_workers" in (html / "workers.html").read_text(encoding="utf-8")
  assert "jaxcoded.interp.matrices.lagrange_matrix" in (html / "interp.html").read_text(
      encoding="utf-8")
