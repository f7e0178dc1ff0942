"""Coding schemes behind one interface (DESIGN.md section 4)."""

from jaxcoded.schemes.base import Decoded, Scheme, SchemeSizes
from jaxcoded.schemes.berrut import BerrutCode
from jaxcoded.schemes.lcc import LagrangeCode

__all__ = ["BerrutCode", "Decoded", "LagrangeCode", "Scheme", "SchemeSizes"]
