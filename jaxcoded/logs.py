"""Quiet commands: library logs go to a file in the workdir (``--verbose`` shows them).

Orbax and absl log every checkpoint step at INFO. A command's own output (its
progress bars, its results) is what its user wants to read, so
:func:`to_file` sends every INFO record to ``<workdir>/jaxcoded.log`` and lets
only warnings and errors through to the terminal, unless ``verbose``.
"""

from __future__ import annotations

import logging
import os
import pathlib

from absl import logging as absl_logging

__all__ = ["LOG_FILE", "to_file"]

LOG_FILE = "jaxcoded.log"


def to_file(workdir: str | os.PathLike, verbose: bool = False) -> pathlib.Path:
  """Routes INFO logs to ``<workdir>/jaxcoded.log``; the terminal gets WARNING+ unless verbose.

  Returns:
    The log file's path.
  """
  path = pathlib.Path(workdir).absolute()
  path.mkdir(parents=True, exist_ok=True)
  path = path / LOG_FILE
  root = logging.getLogger()
  if not any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
  root.setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.INFO)  # records reach the file...
  terminal = logging.INFO if verbose else logging.WARNING
  absl_logging.get_absl_handler().setLevel(terminal)  # ...the terminal only what it should
  for handler in root.handlers:
    if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
      handler.setLevel(terminal)
  return path
