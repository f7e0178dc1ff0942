"""Learned coded inference (docs/design.md section 4.6): the project's main scheme.

Two learned schemes share one shape: an encoder at the master (or at the
workers, design B), N workers at points b_n, a masked polynomial fit at the
master evaluated at the data points a_k, and a per-query decoder head.

``PolynomialCode`` (exact threshold). Networks produce de + 1 coefficient
tensors c_j from the K queries; worker n receives e(b_n) = sum_j c_j b_n^j and
runs a network h that is a polynomial of degree dh in its input. Then
z -> h(e(z)) is a polynomial of degree de * dh, so ANY R = de * dh + 1
returned outputs determine it exactly: the master fits it (least squares when
more return, the same polynomial up to rounding), evaluates it at a_k, which
gives h(e(a_k)) whichever workers returned, and the head maps that to logits.
New worker points can be used at deploy time (``with_worker_points``).
With ``num_adversaries`` E >= 1 the master first locates and drops up to E
wrong outputs among any R0 + 2E returned ones (R0 = de * dh + 1;
``jaxcoded.robust``, docs/reliability.md), so R = R0 + 2E outputs are needed.

``LearnedLagrangeCode`` (approximate threshold). A per-query encoder network
E, Lagrange coding u(z) through (a_k, E(x_k)), workers run the deployed base
classifier f unchanged (frozen), the master least-squares-fits a polynomial of
a chosen degree R - 1 to the available outputs and evaluates at a_k, and a
head gives logits. f is not a polynomial, so R is only a tuning knob: the
decoded answer depends on which workers returned.

Both are ``nnx.Module``s holding their networks and points, and implement
the common interface (``sizes``, ``encode``, ``decode``, ``worker_tasks``);
``Deployment.learned(name, code, design=...)`` runs the whole pipeline.

Design A (master-side encoding): the master runs the encoder and sends e(b_n)
to worker n. Design B (worker-side encoding): worker n reads the K queries and
computes its own e(b_n); the master sends only b_n. The outputs are the same.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxcoded import coders, interp, robust, stragglers, validation
from jaxcoded.schemes import base, learned_decode, points

__all__ = ["CodePoints", "LearnedLagrangeCode", "PolynomialCode", "trainable"]

class CodePoints(nnx.Variable):
  """Evaluation points of a code: state, but not trained."""


def trainable(code: nnx.Module) -> Any:
  """The NNX filter of a code's trained parameters (a frozen classifier excluded)."""
  if getattr(code, "frozen_classifier", False):
    return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("classifier")))
  return nnx.Param


def _default_points(num_queries: int, num_workers: int, data_points, worker_points, what: str):
  # Second-kind worker points even at N = K + 1: the trained codes were trained on them.
  default_data, default_workers = points.default_points(
      num_queries, num_workers, avoid_midpoints=False
  )
  a = default_data if data_points is None else data_points
  b = default_workers if worker_points is None else worker_points
  return points.check_points(a, b, what)


def _power_basis(z: jax.Array, degree: int) -> jax.Array:
  """(T,) points -> (T, degree + 1) matrix of z^0 .. z^degree."""
  return z[:, None] ** jnp.arange(degree + 1, dtype=z.dtype)[None, :]


class PolynomialCode(nnx.Module, base.Scheme):
  """Learned polynomial code with the exact recovery threshold R = de * dh + 1.

  Attributes:
    encoder: ``coders.CoefficientEncoder`` of degree de (master, or workers in
      design B).
    worker: polynomial network h of degree dh (``worker.degree``).
    head: ``coders.DecoderHead`` (master).
    data_points: (K,) a_k.
    worker_points: (N,) b_n, N >= R.
    num_adversaries: E >= 0 wrong worker outputs located and dropped before
      the head (0: plain decoding).
    rtol: the locator's consistency tolerance (None: ``robust.default_rtol``).
  """

  def __init__(
      self,
      encoder: coders.CoefficientEncoder,
      worker: coders.PolySequential,
      head: coders.DecoderHead,
      data_points: ArrayLike,
      worker_points: ArrayLike,
      *,
      check_degree: bool = True,
      seed: int = 0,
      num_adversaries: int = 0,
      rtol: float | None = None,
  ):
    """Assembles a code from its networks; checks the worker's degree numerically.

    Raises:
      ValueError: a worker that is not a polynomial of its declared degree
        (e.g. built with a ReLU), too few workers for R (R0 + 2E with E
        adversaries), or bad points.
    """
    degree = getattr(worker, "degree", None)
    if not isinstance(degree, int) or degree < 1:
      raise ValueError(
          "PolynomialCode: the worker network must declare its polynomial degree "
          "(build it from coders.PolySequential blocks)."
      )
    data_points, worker_points = points.check_points(data_points, worker_points, "PolynomialCode")
    self.encoder = encoder
    self.worker = worker
    self.head = head
    self.data_points = CodePoints(data_points)
    self.worker_points = CodePoints(worker_points)
    robust.check_num_errors(num_adversaries, "PolynomialCode")
    self.num_adversaries = num_adversaries
    if self.num_workers < self.recovery_threshold:
      formula = "de * dh + 1 + 2E" if num_adversaries else "de * dh + 1"
      raise ValueError(
          f"PolynomialCode: N = {self.num_workers} workers cannot reach the recovery threshold "
          f"R = {formula} = {self.encoder.degree} * {degree} + 1"
          + (f" + 2 * {num_adversaries}" if num_adversaries else "")
          + f" = {self.recovery_threshold}."
      )
    robust.check_config(
        self.num_workers, self.interpolation_threshold - 1, num_adversaries, rtol, "PolynomialCode"
    )
    self.rtol = None if rtol is None else float(rtol)
    if check_degree:
      example = jax.random.normal(jax.random.key(seed), encoder.coded_shape)
      coders.check_polynomial_degree(
          worker, example, degree, jax.random.key(seed + 1), strict=False
      )

  @classmethod
  def create(
      cls,
      num_queries: int,
      num_workers: int,
      input_shape: tuple[int, int, int],
      num_classes: int,
      *,
      encoder_degree: int,
      encoder_features: int = 0,
      worker_features: tuple[int, ...] = (16, 32),
      worker_kernel: int = 3,
      worker_out: int = 64,
      power: int = 2,
      num_activations: int = 1,
      worker_groups: int = 1,
      worker_space_to_depth: int = 1,
      worker_pools: tuple[int, ...] | None = None,
      worker_activation_at: tuple[int, ...] | None = None,
      head_hidden: int = 64,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      num_adversaries: int = 0,
      rtol: float | None = None,
      rngs: nnx.Rngs,
  ) -> "PolynomialCode":
    """A code with default Chebyshev points and the networks of ``jaxcoded.coders``.

    Args:
      num_queries: K.
      num_workers: N >= R = encoder_degree * power**num_activations + 1.
      input_shape: (H, W, C) of one query (H, W even), or (D,) of a feature
        vector (then the worker is ``coders.poly_mlp`` and the image-only
        worker options are ignored).
      num_classes: C, the logits' width.
      encoder_degree: de.
      encoder_features: extra nonlinear per-query channels of the encoder
        (0: a purely linear encoder).
      worker_features, worker_kernel, worker_out, power, num_activations:
        the worker network (``coders.poly_cnn``); dh = power**num_activations.
      worker_groups, worker_space_to_depth, worker_pools, worker_activation_at:
        ``coders.poly_cnn``'s groups, space_to_depth, pools and activation_at
        (defaults: the plain network). worker_groups = 0 means one group per
        query group of the encoder (its ``num_groups``).
      head_hidden: hidden width of the decoder head (0: per-position affine).
      data_points, worker_points: optional (K,) and (N,) points.
      num_adversaries: E >= 0 Byzantine workers to tolerate (then N >= R0 + 2E).
      rtol: the locator's consistency tolerance; None for the dtype's default.
      rngs: initialisation keys.
    """
    base.check_group_sizes(num_queries, 0)
    a, b = _default_points(num_queries, num_workers, data_points, worker_points, "PolynomialCode")
    encoder = coders.CoefficientEncoder(
        a, encoder_degree, input_shape, features=encoder_features, rngs=rngs
    )
    worker = coders.poly_network(
        encoder.coded_shape, worker_out, features=worker_features, kernel=worker_kernel,
        power=power, num_activations=num_activations,
        groups=worker_groups or encoder.num_groups, space_to_depth=worker_space_to_depth,
        pools=worker_pools, activation_at=worker_activation_at, rngs=rngs,
    )
    head = coders.DecoderHead(num_queries, worker_out, num_classes, hidden=head_hidden, rngs=rngs)
    return cls(encoder, worker, head, a, b, num_adversaries=num_adversaries, rtol=rtol)

  def training_masks(self, key: jax.Array, num_masks: int) -> jax.Array:
    """(M, N) masks of masked straggler dropout: between R and N workers return."""
    return stragglers.dropout_masks(key, num_masks, self.num_workers, self.recovery_threshold)

  # -- sizes ------------------------------------------------------------------

  @property
  def encoder_degree(self) -> int:
    return self.encoder.degree

  @property
  def worker_degree(self) -> int:
    return self.worker.degree

  @property
  def interpolation_threshold(self) -> int:
    """R0 = de * dh + 1: the outputs that determine h(e(z)) when none is wrong."""
    return self.encoder.degree * self.worker.degree + 1

  @property
  def sizes(self) -> base.SchemeSizes:
    threshold = self.interpolation_threshold + 2 * self.num_adversaries
    return base.SchemeSizes(
        int(self.data_points[...].shape[0]), int(self.worker_points[...].shape[0]), threshold
    )

  def at_workers(self, num_workers: int) -> "PolynomialCode | None":
    """The same trained code on ``num_workers`` workers at the default points; None below R.

    Exact decoding from any R outputs does not depend on where the workers
    are, so the networks need no retraining (docs/design.md section 6a).
    """
    if num_workers < self.recovery_threshold:
      return None
    _, worker_points = points.default_points(
        self.num_queries, num_workers, self.worker_points[...].dtype)
    return self.with_worker_points(worker_points)

  def with_worker_points(self, worker_points: ArrayLike) -> "PolynomialCode":
    """The same trained code deployed on other workers (any N >= R), no retraining."""
    return PolynomialCode(
        self.encoder, self.worker, self.head, self.data_points[...], worker_points,
        check_degree=False, num_adversaries=self.num_adversaries, rtol=self.rtol,
    )

  # -- encoding -----------------------------------------------------------------

  def coefficients(self, queries: ArrayLike) -> jax.Array:
    """(K, H, W, C) queries -> (de + 1, ...) coefficient tensors c_0..c_de."""
    self.check_queries(queries)
    return self.encoder(queries)

  def evaluate_code(self, coefficients: jax.Array, at: ArrayLike) -> jax.Array:
    """e(z) = sum_j c_j z^j at T points: (de + 1, ...) and (T,) -> (T, ...)."""
    at = jnp.asarray(at, coefficients.dtype)
    # One GEMM (T, de + 1) @ (de + 1, P) over the flattened trailing axes,
    # batched over groups without transposes (interp.apply_matrix).
    return interp.apply_matrix(_power_basis(at, self.encoder.degree), coefficients)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, H, W, C) queries -> (N, ...) coded inputs e(b_n) (design A).

    Learned codes take one array of images (not a pytree): their encoder is
    a network trained on that layout.
    """
    return self.evaluate_code(self.coefficients(queries), self.worker_points[...])

  # -- workers ------------------------------------------------------------------

  def worker_fn(self) -> tuple[base.WorkerFn, Any]:
    """(worker_fn, params) for ``workers.run_workers``: h on one coded input."""
    graphdef, state = nnx.split(self.worker)
    return (lambda params, x: nnx.merge(graphdef, params)(x)), state

  def worker_tasks(self, base_task=None, trained_task=None):
    """Every worker runs the code's own network h (design A)."""
    return (base.WorkerTask(*self.worker_fn()),), (0,) * self.num_workers

  def worker_side_task(self) -> base.WorkerTask:
    """Design B: worker n reads the K queries and maps its point b_n to h(e(b_n)).

    Called as ``fn(params, b_n, queries)``; params hold the encoder and h.
    """
    encoder_def, encoder_state = nnx.split(self.encoder)
    worker_def, worker_state = nnx.split(self.worker)

    def worker_fn(params, point, queries):
      encoder_state, worker_state = params
      coefficients = nnx.merge(encoder_def, encoder_state)(queries)
      coded = self.evaluate_code(coefficients, point[None])[0]
      return nnx.merge(worker_def, worker_state)(coded)

    return base.WorkerTask(worker_fn, (encoder_state, worker_state), reads_queries=True)

  # -- decoding -----------------------------------------------------------------

  @property
  def locates_errors(self) -> bool:
    return self.num_adversaries > 0

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, D) worker outputs and (N,) mask -> Decoded((K, C) logits, (K,) answered).

    Any R or more available outputs give the same logits up to rounding;
    stragglers' rows are never read. Below R nothing is answered. With E >= 1
    adversaries this is ``decode_and_locate(outputs, mask)[0]``.
    """
    if self.num_adversaries:
      return self._decode_and_locate(outputs, mask)[0]
    self.check_mask(mask)
    values, enough = learned_decode.masked_matrix_decode(
        outputs, mask, self.worker_points[...], self.data_points[...], self.interpolation_threshold
    )
    logits = self.head(values)
    logits = jnp.where(enough, logits, jnp.zeros((), logits.dtype))
    return base.Decoded(logits, jnp.full((self.num_queries,), enough))

  def robust_decode(self, outputs: ArrayLike, mask: ArrayLike) -> robust.RobustDecoded:
    """Locates up to E wrong outputs, fits the rest, and applies the head.

    The fit is ``robust.robust_polyfit`` of degree R0 - 1 from the worker
    points to the data points with E = ``num_adversaries`` (E = 0: a
    consistency check only); the head then maps the (K, D) fitted values to
    logits. With at most E wrong outputs among A >= R0 + 2E returned, the
    logits equal ``decode`` with the wrong workers absent; beyond, nothing is
    answered where the inconsistency is detectable (docs/reliability.md).

    Args:
      outputs: (N, D) worker outputs; stragglers' rows are never read.
      mask: (N,) bool, True where the worker returned.

    Returns:
      ``robust.RobustDecoded`` with values (K, C) logits (zeros when not
      answered), answered (), rejected (N,), enough (), consistent (),
      relative_residual ().
    """
    self.check_mask(mask)
    fit = robust.robust_polyfit(
        self.worker_points[...], outputs, self.data_points[...], self.interpolation_threshold - 1,
        self.num_adversaries, mask, rtol=self.rtol,
    )
    logits = self.head(fit.values)
    return fit._replace(values=jnp.where(fit.answered, logits, jnp.zeros((), logits.dtype)))

  def _decode_and_locate(
      self, outputs: ArrayLike, mask: ArrayLike
  ) -> tuple[base.Decoded, jax.Array]:
    """``robust_decode`` as (Decoded((K, C) logits, (K,) answered), (N,) bool rejected outputs)."""
    result = self.robust_decode(outputs, mask)
    answered = jnp.full((self.num_queries,), result.answered)
    return base.Decoded(result.values, answered), result.rejected


class LearnedLagrangeCode(nnx.Module, base.Scheme):
  """Learned Lagrange code around an unchanged, frozen classifier (approximate R).

  Attributes:
    encoder: per-query ``coders.QueryEncoder`` (master, or workers in design B).
    classifier: the deployed base classifier f, (B, H, W, C) -> (B, C); frozen
      (``trainable`` excludes it).
    head: per-position ``coders.DecoderHead`` on the fitted logits.
    data_points, worker_points: (K,) and (N,).
    fit_degree: degree R - 1 of the master's least-squares fit.
  """

  frozen_classifier = True  # f is not trained (``trainable``)

  def __init__(
      self,
      encoder: coders.QueryEncoder,
      classifier: nnx.Module,
      head: coders.DecoderHead,
      data_points: ArrayLike,
      worker_points: ArrayLike,
      fit_degree: int,
  ):
    data_points, worker_points = points.check_points(
        data_points, worker_points, "LearnedLagrangeCode")
    fit_degree = validation.check_integer(
        fit_degree, "fit_degree", 0,
        message=f"LearnedLagrangeCode: fit_degree must be an integer >= 0, got {fit_degree!r}.",
    )
    if np.shape(worker_points)[0] < fit_degree + 1:
      raise ValueError(
          f"LearnedLagrangeCode: a degree-{fit_degree} fit needs N >= {fit_degree + 1} workers, "
          f"got {np.shape(worker_points)[0]}."
      )
    self.encoder = encoder
    self.classifier = classifier
    self.head = head
    self.data_points = CodePoints(data_points)
    self.worker_points = CodePoints(worker_points)
    self.fit_degree = fit_degree

  @classmethod
  def create(
      cls,
      classifier: nnx.Module,
      num_queries: int,
      num_workers: int,
      input_shape: tuple[int, int, int],
      num_classes: int,
      *,
      recovery_threshold: int,
      encoder_features: int = 1,
      encoder_kernel: int = 3,
      data_points: ArrayLike | None = None,
      worker_points: ArrayLike | None = None,
      rngs: nnx.Rngs,
  ) -> "LearnedLagrangeCode":
    """A code around ``classifier`` with fit degree R - 1 and default points."""
    base.check_group_sizes(num_queries, 0)
    a, b = _default_points(
        num_queries, num_workers, data_points, worker_points, "LearnedLagrangeCode"
    )
    encoder = coders.QueryEncoder(
        input_shape, features=encoder_features, kernel=encoder_kernel, rngs=rngs
    )
    head = coders.DecoderHead(num_queries, num_classes, num_classes, hidden=0, rngs=rngs)
    return cls(encoder, classifier, head, a, b, recovery_threshold - 1)

  @property
  def sizes(self) -> base.SchemeSizes:
    return base.SchemeSizes(
        int(self.data_points[...].shape[0]),
        int(self.worker_points[...].shape[0]),
        self.fit_degree + 1,
    )

  def training_masks(self, key: jax.Array, num_masks: int) -> jax.Array:
    """(M, N) masks of masked straggler dropout: between R and N workers return."""
    return stragglers.dropout_masks(key, num_masks, self.num_workers, self.recovery_threshold)

  def encoding_matrix(self, at: ArrayLike | None = None) -> jax.Array:
    """(T, K) Lagrange matrix from the data points to ``at`` (default: the workers)."""
    at = self.worker_points[...] if at is None else at
    return interp.lagrange_matrix(self.data_points[...], at)

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, H, W, C) -> (N, H, W, C) coded inputs u(b_n) (design A)."""
    self.check_queries(queries)
    return interp.apply_matrix(self.encoding_matrix(), self.encoder(queries))

  def worker_fn(self) -> tuple[base.WorkerFn, Any]:
    """(worker_fn, params): the frozen classifier on one coded input."""
    return coders.frozen_worker_fn(self.classifier)

  def worker_tasks(self, base_task=None, trained_task=None):
    """Every worker runs the frozen classifier on its coded input (design A)."""
    return (base.WorkerTask(*self.worker_fn()),), (0,) * self.num_workers

  def worker_side_task(self) -> base.WorkerTask:
    """Design B: worker n reads the K queries and maps b_n to f(u(b_n))."""
    encoder_def, encoder_state = nnx.split(self.encoder)
    classifier_def, classifier_state = nnx.split(self.classifier)
    data_points = self.data_points[...]

    def worker_fn(params, point, queries):
      encoder_state, classifier_state = params
      row = interp.lagrange_matrix(data_points, point[None])
      coded = interp.apply_matrix(row, nnx.merge(encoder_def, encoder_state)(queries))
      classifier = nnx.merge(classifier_def, jax.lax.stop_gradient(classifier_state))
      return classifier(coded)[0]

    return base.WorkerTask(worker_fn, (encoder_state, classifier_state), reads_queries=True)

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, C) worker logits and (N,) mask -> Decoded((K, C) logits, (K,) answered)."""
    self.check_mask(mask)
    values, enough = learned_decode.masked_matrix_decode(
        outputs, mask, self.worker_points[...], self.data_points[...], self.recovery_threshold
    )
    logits = jnp.where(enough, self.head(values), jnp.zeros((), values.dtype))
    return base.Decoded(logits, jnp.full((self.num_queries,), enough))
