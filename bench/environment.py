"""What every benchmark prints first: the machine, its load and the versions.

Timings on a shared machine mean little without the load they were taken
under, so every script in ``bench/`` starts its output with
``print(environment.markdown())`` and reports ratios measured within one run.

  >>> from bench import environment      # or ``import environment`` from bench/
  >>> print(environment.markdown())       # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scipy", "ray", "torch")


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
  """Installed versions of the packages a benchmark may time (absent ones left out)."""
  found = {"python": platform.python_version()}
  for name in _PACKAGES:
    try:
      found[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      continue
  return found


def describe() -> dict[str, str]:
  """The machine, its load average and the versions, as strings."""
  try:
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    load = "unknown"
  info = {
      "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
      "machine": f"{_cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
      "load average (1 / 5 / 15 min)": load,
  }
  try:
    import jax  # only when installed: the PyTorch side of a benchmark may run without it

    info["jax backend"] = ", ".join(sorted({d.platform for d in jax.devices()}))
  except Exception:  # noqa: BLE001 - a missing backend is reported, not fatal
    pass
  info["versions"] = ", ".join(f"{k} {v}" for k, v in versions().items())
  return info


def markdown() -> str:
  """A two-column Markdown table of :func:`describe`, to print above the results."""
  lines = ["| environment | |", "|---|---|"]
  lines += [f"| {key} | {value} |" for key, value in describe().items()]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  print(markdown())
