"""Coding schemes behind one interface (docs/design.md section 4)."""

from jaxcoded.schemes.base import Decoded, Scheme, SchemeSizes
from jaxcoded.schemes.berrut import BerrutCode
from jaxcoded.schemes.berrut_byzantine import ByzantineBerrutCode
from jaxcoded.schemes.lcc import LagrangeCode
from jaxcoded.schemes.learned import LearnedLagrangeCode, PolynomialCode
from jaxcoded.schemes.parm import ParityCode
from jaxcoded.schemes.replication import Replication
from jaxcoded.schemes.uncoded import Uncoded, majority_class_logits

__all__ = [
    "BerrutCode",
    "ByzantineBerrutCode",
    "Decoded",
    "LagrangeCode",
    "LearnedLagrangeCode",
    "ParityCode",
    "PolynomialCode",
    "Replication",
    "Scheme",
    "SchemeSizes",
    "Uncoded",
    "majority_class_logits",
]
