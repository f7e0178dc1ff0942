"""jaxcoded: coded distributed inference in JAX.

The coding core imports only jax and numpy:

  ``interp``      interpolation matrices and decoders (the maths of every code);
  ``schemes``     the codes: sizes, encode, decode (pytrees of any real data);
  ``workers``     the worker axis: ``vmap`` or ``shard_map``, straggler masks;
  ``stragglers``  straggler models and masks;
  ``deployment``  the one pipeline: checks, encode, workers, decode;

and the heavier layers load their dependencies (Flax, Optax, Orbax,
ml_collections, scikit-learn, Ray, matplotlib) only when used:
``data``, ``models``, ``training``, ``comparison``, ``serving``.

Submodules load on first access (``jaxcoded.schemes`` or
``from jaxcoded import schemes``), so ``import jaxcoded`` itself is cheap.
"""

import importlib

__all__ = ["deployment", "interp", "schemes", "stragglers", "workers"]
__version__ = "0.2.0.dev0"


def __getattr__(name: str):
  if name in __all__:
    return importlib.import_module(f"jaxcoded.{name}")
  raise AttributeError(f"module 'jaxcoded' has no attribute {name!r}")
