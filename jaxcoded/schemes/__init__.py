"""Coding schemes behind one interface (docs/design.md section 4).

Importing a scheme's module registers its kind (``registry.register``): adding
a fixed scheme is its module plus its import line here.
"""

from jaxcoded.schemes.base import Decoded, Scheme, SchemeSizes
from jaxcoded.schemes.berrut import BerrutCode
from jaxcoded.schemes.berrut_byzantine import ByzantineBerrutCode
from jaxcoded.schemes.lcc import LagrangeCode
from jaxcoded.schemes.learned import LearnedLagrangeCode, PolynomialCode
from jaxcoded.schemes.parm import ParityCode
from jaxcoded.schemes.replication import Replication
from jaxcoded.schemes.spline import SplineCode, fit_smoothing
from jaxcoded.schemes.systematic import LearnedSystematicCode
from jaxcoded.schemes.uncoded import Uncoded, majority_class_logits

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
    "SplineCode",
    "SchemeSizes",
    "Uncoded",
    "fit_smoothing",
    "majority_class_logits",
]
