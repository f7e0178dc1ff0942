"""jaxcoded: coded distributed inference in JAX.

The coding core is imported here; the heavier parts (``data``, ``models``,
``training``, ``evaluation``) are submodules imported on use, e.g.
``from jaxcoded import training``.
"""

from jaxcoded import interp, schemes, stragglers, workers

__all__ = ["interp", "schemes", "stragglers", "workers"]
__version__ = "0.1.0"
