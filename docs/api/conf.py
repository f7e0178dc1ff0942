"""Sphinx configuration of the jaxcoded API reference (docs/api).

Build it, with warnings as errors, as tests/test_api_docs.py does:

  sphinx-build -W --keep-going -b html docs/api /tmp/jaxcoded-api

The pages are generated from the docstrings (``sphinx.ext.autodoc``), read as
Google-style docstrings (``sphinx.ext.napoleon``). Every module is imported
for real; an optional heavy dependency that is not installed (Ray for
``jaxcoded.serving``, matplotlib for the comparison's plots) is mocked, so the
reference still builds without it, and the build says which it mocked.
"""

import importlib.util
import io
import os
import pathlib
import re
import sys

import docutils.core

_ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(_ROOT))

# Importing the library must not look for accelerators or start anything.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "jaxcoded"
author = "the jaxcoded authors"
copyright = "the jaxcoded authors"  # noqa: A001 (Sphinx's name)


def _version() -> str:
  for line in (_ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
    if line.startswith("version"):
      return line.split("=", 1)[1].strip().strip('"')
  return "unknown"


release = version = _version()

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

# Optional dependencies: imported for real when installed (CI installs them),
# mocked only when absent.
_OPTIONAL = ["ray", "matplotlib", "tensorflow", "tensorflow_datasets", "httpx"]
autodoc_mock_imports = [name for name in _OPTIONAL if importlib.util.find_spec(name) is None]
if autodoc_mock_imports:
  print(f"docs/api/conf.py: mocking absent optional packages {autodoc_mock_imports}")

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
# Type hints go into the parameter descriptions, not the signatures: jax/numpy
# types read better there, and the signatures stay short.
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_class_signature = "mixed"
autodoc_inherit_docstrings = True

# Google-style docstrings (STYLE.md). ``Attributes:`` sections become
# ``:ivar:`` fields, so a dataclass field that autodoc also lists is not
# described twice (a duplicate-object warning).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_include_init_with_doc = False
napoleon_preprocess_types = False
napoleon_attr_annotations = True

# References to other libraries' objects (jax.Array, nnx.Module) are not
# resolved: no intersphinx, so no network. Unresolved references are not
# warnings (nitpicky off); every other warning is an error in the test.
nitpicky = False

templates_path = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []
html_theme_options = {"description": "Coded distributed inference in JAX", "fixed_sidebar": True}


# Plain-text tables in docstrings. The library's docstrings (house style)
# line up names and descriptions in columns under a paragraph, e.g.
#
#   Three models, from crude to subtle:
#
#     ``"random"``     large random outputs: Gaussian noise with a standard
#                      deviation ``scale`` times the RMS of the honest outputs;
#
# which reads well as text but is not reStructuredText (a definition list that
# ends without a blank line, "unexpected indentation"). Such a block is shown
# as written, as a literal block, instead (whatever the block holds). The rule
# is narrow so that it hides no other mistake: only an indented block right
# under a plain paragraph at the left margin, and only when docutils cannot
# parse that paragraph and block on their own. Everything else (a bad
# reference, an unclosed literal, a broken Args entry) still warns, and the
# build fails on it.

_ROLE = re.compile(r":[\w:.-]+:`")


def _indent(line: str) -> int:
  return len(line) - len(line.lstrip())


def _is_plain(line: str) -> bool:
  """A line of an ordinary paragraph at the left margin (no field, directive or list item)."""
  text = line.strip()
  return (bool(text) and _indent(line) == 0 and not text.startswith((":", "..", ">>>"))
          and not re.match(r"([-*+]|\d+\.|#\.)\s", text) and not text.endswith("::"))


def _docutils_complains(lines: list[str]) -> bool:
  """Whether docutils reports anything (WARNING or worse) on these lines alone."""
  text = _ROLE.sub("`", "\n".join(lines))  # Sphinx roles are not docutils' concern here.
  stream = io.StringIO()
  docutils.core.publish_doctree(
      text, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": stream})
  return bool(stream.getvalue())


def _literal_tables(lines: list[str]) -> list[str]:
  out = list(lines)
  i = 0
  while i < len(out):
    # A paragraph at the left margin: out[start:end] ...
    if not _is_plain(out[i]) or (i > 0 and out[i - 1].strip()):
      i += 1
      continue
    start = end = i
    while end < len(out) and _is_plain(out[end]):
      end += 1
    # ... then, after at most one blank line, an indented block out[block:stop].
    block = end + 1 if end < len(out) and not out[end].strip() else end
    stop = block
    while stop < len(out) and (not out[stop].strip() or _indent(out[stop]) > 0):
      stop += 1
    while stop > block and not out[stop - 1].strip():
      stop -= 1
    if (stop == block or out[block].lstrip().startswith(">>>")
        or not _docutils_complains(out[start:stop])):
      i = max(end, i + 1)
      continue
    last = out[end - 1].rstrip()
    out[end - 1] = last + (":" if last.endswith(":") else " ::")
    out[end:block] = [""]
    i = stop + 1 - (block - end)
  return out


def _process_docstring(app, what, name, obj, options, lines):
  del app, what, name, obj, options
  lines[:] = _literal_tables(lines)


# A package's page lists its modules with one line,
#
#   .. jaxcoded-submodules:: jaxcoded.schemes base uncoded replication
#
# which becomes a section and an ``automodule`` for every public module of the
# package found on disk: the named ones first, in that order, then the others
# alphabetically. A module added to a package appears without an edit here, and
# one that is removed or renamed does not break the build.

_SUBMODULES = re.compile(r"^\.\. jaxcoded-submodules:: *(\S+)(.*)$", re.MULTILINE)


def _submodules(package: str) -> list[str]:
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise ValueError(f"jaxcoded-submodules: {package} is not a package")
  names = set()
  for location in map(pathlib.Path, spec.submodule_search_locations):
    names |= {p.stem for p in location.glob("*.py")}
    names |= {p.parent.name for p in location.glob("*/__init__.py")}
  return sorted(n for n in names if not n.startswith("_"))


def _expand_submodules(match: re.Match) -> str:
  package, preferred = match.group(1), match.group(2).split()
  found = _submodules(package)
  order = [n for n in preferred if n in found] + [n for n in found if n not in preferred]
  sections = []
  for name in order:
    title = f"{package}.{name}"
    sections.append(f"{title}\n{'-' * len(title)}\n\n.. automodule:: {title}\n")
  return "\n".join(sections)


def _process_source(app, docname, source):
  del app, docname
  source[0] = _SUBMODULES.sub(_expand_submodules, source[0])


def setup(app):
  # After napoleon (priority 500) has turned the Google sections into fields.
  app.connect("autodoc-process-docstring", _process_docstring, priority=600)
  app.connect("source-read", _process_source)
