"""jaxcoded: coded distributed inference in JAX."""

from jaxcoded import interp

__version__ = "0.1.0"
