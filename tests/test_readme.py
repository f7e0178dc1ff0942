"""The README's code examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
  assert len(blocks) >= 2, "the README lost a python example"
  namespaces = []
  for block in blocks:
    namespace = {}
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    namespaces.append(namespace)
  decoded = namespaces[0]["decoded"]
  assert decoded.values.shape == (8, 10)
  assert bool(decoded.answered.all())


def test_readme_core_example_on_non_image_pytrees():
  """The section "Use the coding core in your own JAX code": what it says it computes."""
  import jax
  import numpy as np

  block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
               if "Use the coding core" in b or "standard-normal vectors" in b)
  ns = {}
  exec(compile(block, str(README), "exec"), ns)  # noqa: S102
  assert ns["logits"].shape == (5, 3) and ns["extra"]["features"].shape == (5, 16)
  assert bool(ns["decoded"].answered.all())
  assert jax.tree.map(np.shape, ns["coded"]) == {"vector": (7, 6), "offset": (7, 16)}
  assert ns["batch"].values[0].shape == (100, 5, 3)
  assert jax.tree.structure(ns["grads"]) == jax.tree.structure(ns["queries"])
  # Decoded per mask in the batch as one call would: the vmapped decode is the decode.
  one = ns["code"].decode(ns["outputs"], ns["masks"][7])
  np.testing.assert_allclose(ns["batch"].values[0][7], one.values[0], rtol=1e-6, atol=1e-8)


def test_readme_result_tables_are_their_results_files():
  """Each table under a ``<!-- table: FILE -->`` marker is eval/tables.py's output for FILE."""
  import json

  from jaxcoded.comparison import report

  text = README.read_text()
  marked = re.findall(r"<!-- table: (\S+?)(?: stragglers=([\d,]+))? -->\n\n((?:\|.*\n)+)", text)
  assert len(marked) >= 2, "the README's equal-resource tables lost their results-file markers"
  for name, stragglers, table in marked:
    results = json.loads((README.parent / name).read_text())
    chosen = tuple(int(s) for s in stragglers.split(",")) if stragglers else None
    assert table == report.format_compact(results, chosen), f"README table of {name} is stale"


def test_readme_frontier_table_is_its_results_file():
  """The table under ``<!-- frontier: FILE -->`` is ``eval/tables.py --frontier FILE``'s output."""
  import json

  from jaxcoded.comparison import frontier

  marked = re.findall(r"<!-- frontier: (\S+?) -->\n\n((?:\|.*\n)+)", README.read_text())
  assert marked, "the README's frontier table lost its results-file marker"
  for name, table in marked:
    results = json.loads((README.parent / name).read_text())
    assert table.strip() == frontier.format_front_table(results).strip(), f"README frontier table of {name} is stale"

