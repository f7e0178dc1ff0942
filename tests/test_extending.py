"""docs/extending.md's examples run as written, in order, in one namespace."""

import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
  assert len(blocks) >= 4, "docs/extending.md lost an example"
  namespace = {}
  for block in blocks:
    exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
  assert namespace["decoded"].values["y"].shape == (4, 2)
  assert namespace["kind"].name == "mean_parity"
