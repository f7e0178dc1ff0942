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
