"""Coding schemes behind one interface (docs/design.md section 4).

Each scheme is the maths alone: its sizes, ``encode`` and ``decode`` (and
``decode_and_locate`` where it locates wrong outputs), on any pytree of
arrays. The fixed schemes import only jax and numpy. The learned codes are
Flax modules: ``PolynomialCode``, ``LearnedLagrangeCode`` and
``LearnedSystematicCode`` load Flax on first use (``schemes.PolynomialCode``
or ``from jaxcoded.schemes import learned``). Building schemes from
experiment configs is the comparison layer's job
(``jaxcoded.comparison.builders``).
"""

import importlib

from jaxcoded.schemes.base import Decoded, Scheme, SchemeSizes
from jaxcoded.schemes.berrut import BerrutCode
from jaxcoded.schemes.berrut_byzantine import ByzantineBerrutCode
from jaxcoded.schemes.lcc import LagrangeCode
from jaxcoded.schemes.parm import ParityCode
from jaxcoded.schemes.replication import Replication
from jaxcoded.schemes.spline import SplineCode
from jaxcoded.schemes.uncoded import Uncoded, majority_class_logits

# Learned codes (Flax modules): imported on first access, so that the fixed
# schemes stay free of Flax and Optax.
_LAZY = {
    "LearnedLagrangeCode": "jaxcoded.schemes.learned",
    "PolynomialCode": "jaxcoded.schemes.learned",
    "LearnedSystematicCode": "jaxcoded.schemes.systematic",
}

__all__ = [
    "BerrutCode",
    "ByzantineBerrutCode",
    "Decoded",
    "LagrangeCode",
    "LearnedLagrangeCode",
    "LearnedSystematicCode",
    "ParityCode",
    "PolynomialCode",
    "Replication",
    "Scheme",
    "SchemeSizes",
    "SplineCode",
    "Uncoded",
    "majority_class_logits",
]


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'jaxcoded.schemes' has no attribute {name!r}")
