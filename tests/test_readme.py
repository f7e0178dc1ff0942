"""The README's code examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert blocks, "the README has no python example"
  for block in blocks:
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
  decoded = namespace["decoded"]
  assert decoded.values.shape == (8, 10)
  assert bool(decoded.answered.all())


def test_readme_result_tables_are_their_results_files():
  """Each table under a ``<!-- table: FILE -->`` marker is eval/tables.py's output for FILE."""
  import json  # pylint: disable=g-import-not-at-top

  from jaxcoded.comparison import report  # pylint: disable=g-import-not-at-top

  text = README.read_text()
  marked = re.findall(r"<!-- table: (\S+?)(?: stragglers=([\d,]+))? -->\n\n((?:\|.*\n)+)", text)
  assert len(marked) >= 2, "the README's equal-resource tables lost their results-file markers"
  for name, stragglers, table in marked:
    results = json.loads((README.parent / name).read_text())
    chosen = tuple(int(s) for s in stragglers.split(",")) if stragglers else None
    assert table == report.format_compact(results, chosen), f"README table of {name} is stale"
