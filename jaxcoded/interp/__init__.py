"""Interpolation: the linear maps that every code in jaxcoded is made of.

Encoding and decoding are both linear maps along the leading (query or worker)
axis (docs/design.md section 3). This package builds those maps as dense
matrices from a set of *nodes* (where values are known) to a set of *targets*
(where they are wanted), optionally through the *available* nodes only, and
applies them:

  ``points``    chebyshev_points: the evaluation points of the codes;
  ``matrices``  lagrange_matrix (polynomial of degree m-1 through the m
                available nodes, barycentric form, Berrut & Trefethen 2004),
                polyfit_matrix (least-squares polynomial of a given degree;
                equals lagrange_matrix when exactly degree + 1 nodes are
                available), berrut_matrix (Berrut's rational interpolant,
                Berrut 1988: pole-free for any number of nodes);
  ``apply``     apply_matrix: ``M @ values`` along the leading axis of any
                array, one GEMM over the flattened trailing axes (also under
                vmap);
  ``decoders``  lagrange_interpolate, berrut_interpolate, polyfit_interpolate:
                ``apply_matrix(*_matrix(...), values)`` without a matrix per
                mask;
  ``splines``   smoothing_spline_matrix (cubic smoothing splines: LeTCC,
                NeRCC) and check_smoothing.

Every function is pure, jittable and differentiable, and imports only jax and
numpy. The availability mask is an *array*, so one compiled function serves
every straggler pattern. At the Python boundary (concrete inputs) the public
functions validate their arguments and raise ``ValueError`` with a clear
message; under ``jit`` the checks that need values are skipped and an
impossible request (too few available nodes) yields NaNs rather than a
silently wrong number.

Example:
  >>> import jax.numpy as jnp
  >>> from jaxcoded import interp
  >>> nodes = interp.chebyshev_points(5)
  >>> m = interp.lagrange_matrix(nodes, jnp.array([0.3]))
  >>> round(float(interp.apply_matrix(m, nodes**3)[0]), 5)  # 0.3 ** 3, in float32
  0.027
"""

from jaxcoded.interp.apply import apply_matrix
from jaxcoded.interp.decoders import berrut_interpolate, lagrange_interpolate, polyfit_interpolate
from jaxcoded.interp.matrices import berrut_matrix, lagrange_matrix, polyfit_matrix
from jaxcoded.interp.points import chebyshev_points
from jaxcoded.interp.splines import check_smoothing, smoothing_spline_matrix

__all__ = [
    "apply_matrix",
    "berrut_interpolate",
    "berrut_matrix",
    "chebyshev_points",
    "check_smoothing",
    "lagrange_interpolate",
    "lagrange_matrix",
    "polyfit_interpolate",
    "polyfit_matrix",
    "smoothing_spline_matrix",
]
