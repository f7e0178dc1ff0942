"""Learned systematic code around the unchanged classifier (docs/design.md section 4.8).

The model-agnostic learned code: every worker runs the deployed classifier f
unchanged and frozen. Workers 0 .. K-1 are systematic, worker k runs f(x_k);
workers K .. K+P-1 run f on learned parity images p_j = sum_k w_jk * g(x_k)
(``coders.ParityEncoder``). The master answers query k with f(x_k) itself
whenever worker k returned (exact, the base classifier's answer), and
otherwise with a learned decoder (``coders.SystematicDecoder``) that reads
every returned output, systematic and parity, with the mask. Optionally
(``sketch_features`` > 0) the decoder also reads a cheap learned sketch of
the group's queries (``coders.QuerySketch``), which the master holds in
either design: side information inside the master's budget, so the code's
``decode`` needs the queries (``decode_reads_queries``).

What it guarantees: with S stragglers, the K - (stragglers among the
systematic workers) queries whose own worker returned are answered exactly as
f answers them, whatever the straggler pattern. The others are estimates,
learned by masked straggler dropout; nothing bounds their error. It decodes
from any non-empty set of returned workers (like Berrut), so R = K is only the
number the service waits for.

One trained code serves every S <= P: deployed with its first S parities
(``with_num_parities``, N = K + S), the decoder sees the parities not deployed
as absent. Training masks (``training_masks``) draw S uniformly in 1 .. P,
remove the parities beyond S and S random workers of the K + S deployed, so
they cover exactly the patterns of every deployment.

The idea of learned encoders and decoders around an unchanged f is that of
Kosaian, Rashmi and Venkataraman, "Learning-Based Coded Computation" (2020,
arXiv 1806.01259); ParM (``schemes.parm``) instead trains the parity worker.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike

from jaxcoded import coders, validation
from jaxcoded.schemes import base

__all__ = ["LearnedSystematicCode"]


class _WorkerIndex(nnx.Variable):
  """Worker n's index as its design-B "point": state, but not trained."""


class LearnedSystematicCode(nnx.Module, base.Scheme):
  """K systematic workers and P learned parities, all running the frozen f.

  Attributes:
    encoder: ``coders.ParityEncoder`` with P_max parities (master, or workers
      in design B).
    classifier: the deployed base classifier f, (B, H, W, C) -> (B, C);
      frozen (``learned.trainable`` excludes it).
    decoder: ``coders.SystematicDecoder`` over K + P_max worker slots.
    sketch: ``coders.QuerySketch`` of the queries for the decoder, or None
      (the decoder reads the worker outputs only).
    num_parities: P <= P_max parities deployed; N = K + P.
  """

  frozen_classifier = True  # f is not trained (``learned.trainable``)

  def __init__(
      self,
      encoder: coders.ParityEncoder,
      classifier: nnx.Module,
      decoder: coders.SystematicDecoder,
      num_parities: int | None = None,
      sketch: coders.QuerySketch | None = None,
  ):
    max_parities = encoder.num_parities
    num_parities = max_parities if num_parities is None else num_parities
    validation.check_integer(
        num_parities, "num_parities", 1,
        message=(f"LearnedSystematicCode: num_parities must be an integer in 1 .. "
                 f"{max_parities}, got {num_parities!r}."),
    )
    if num_parities > max_parities:
      raise ValueError(
          f"LearnedSystematicCode: num_parities = {num_parities} exceeds the {max_parities} "
          "parities it was trained with."
      )
    k = decoder.num_queries
    if decoder.num_slots != k + max_parities:
      raise ValueError(
          f"LearnedSystematicCode: the decoder reads {decoder.num_slots} workers, the encoder "
          f"makes K + P = {k} + {max_parities}."
      )
    side = 0 if sketch is None else sketch.features
    if decoder.side_features != side:
      raise ValueError(
          f"LearnedSystematicCode: the decoder reads {decoder.side_features} sketch features, "
          f"the sketch makes {side}."
      )
    self.encoder = encoder
    self.classifier = classifier
    self.decoder = decoder
    self.sketch = sketch
    self.num_parities = int(num_parities)
    self.worker_points = _WorkerIndex(jnp.arange(k + num_parities, dtype=jnp.float32))

  @classmethod
  def create(
      cls,
      classifier: nnx.Module,
      num_queries: int,
      num_parities: int,
      input_shape: tuple[int, int, int],
      num_classes: int,
      *,
      encoder_features: int = 0,
      decoder_hidden: tuple[int, ...] = (256, 256),
      sketch_features: int = 0,
      sketch_pool: int = 2,
      rngs: nnx.Rngs,
  ) -> "LearnedSystematicCode":
    """A code around ``classifier`` with P = ``num_parities`` parities (N = K + P).

    ``sketch_features`` > 0 gives the decoder a learned sketch of the queries
    of that width (mean-pooled by ``sketch_pool``); 0 (default): outputs only.
    """
    base.check_group_sizes(num_queries, num_parities)
    if num_parities < 1:
      raise ValueError(f"LearnedSystematicCode: need at least one parity, got {num_parities}.")
    encoder = coders.ParityEncoder(
        num_queries, num_parities, input_shape, features=encoder_features, rngs=rngs
    )
    decoder = coders.SystematicDecoder(
        num_queries, num_queries + num_parities, num_classes, hidden=tuple(decoder_hidden),
        side_features=sketch_features, rngs=rngs,
    )
    sketch = None
    if sketch_features:
      sketch = coders.QuerySketch(input_shape, sketch_features, pool=sketch_pool, rngs=rngs)
    return cls(encoder, classifier, decoder, sketch=sketch)

  # -- sizes ------------------------------------------------------------------------

  @property
  def max_parities(self) -> int:
    return self.encoder.num_parities

  @property
  def sizes(self) -> base.SchemeSizes:
    k = self.decoder.num_queries
    return base.SchemeSizes(k, k + self.num_parities, k)

  def at_workers(self, num_workers: int) -> "LearnedSystematicCode | None":
    """The same trained code with N - K of its parities; None unless 1 <= N - K <= its parities."""
    num_parities = num_workers - self.num_queries
    if not 1 <= num_parities <= self.max_parities:
      return None
    return self.with_num_parities(num_parities)

  def with_num_parities(self, num_parities: int) -> "LearnedSystematicCode":
    """The same trained code deployed with its first ``num_parities`` parities."""
    return LearnedSystematicCode(
        self.encoder, self.classifier, self.decoder, num_parities, sketch=self.sketch
    )

  @property
  def decode_reads_queries(self) -> bool:
    """True when the decoder reads a sketch of the queries: ``decode`` then needs them."""
    return self.sketch is not None

  # -- encoding and workers -----------------------------------------------------------

  def _encode(self, queries: jax.Array) -> jax.Array:
    """(K, H, W, C) queries -> (N, H, W, C): the queries, then the P parity images."""
    self.check_queries(queries)
    queries = jnp.asarray(queries)
    parities = self.encoder(queries, self.num_parities).astype(queries.dtype)
    return jnp.concatenate([queries, parities])

  def worker_fn(self) -> tuple[base.WorkerFn, Any]:
    """(worker_fn, params): the frozen classifier on one input."""
    return coders.frozen_worker_fn(self.classifier)

  def worker_tasks(self, base_task=None, trained_task=None):
    """Every worker runs the frozen classifier (its own copy of f) on its input."""
    return (base.WorkerTask(*self.worker_fn()),), (0,) * self.num_workers

  def worker_side_task(self) -> base.WorkerTask:
    """Design B: worker n reads the K queries and runs f on x_n or on parity n - K.

    Called as ``fn(params, n, queries)`` with n the worker's index (its
    "point", ``worker_points``).
    """
    encoder_def, encoder_state = nnx.split(self.encoder)
    classifier_def, classifier_state = nnx.split(self.classifier)
    k, p = self.num_queries, self.num_parities

    def worker_fn(params, index, queries):
      encoder_state, classifier_state = params
      n = jnp.asarray(index).astype(jnp.int32)
      parities = nnx.merge(encoder_def, encoder_state)(queries, p).astype(queries.dtype)
      inputs = jnp.concatenate([queries, parities])
      coded = jax.lax.dynamic_index_in_dim(inputs, n, keepdims=True)
      classifier = nnx.merge(classifier_def, jax.lax.stop_gradient(classifier_state))
      return classifier(coded)[0]

    del k
    return base.WorkerTask(worker_fn, (encoder_state, classifier_state), reads_queries=True)

  # -- decoding -----------------------------------------------------------------------

  def _decode(self, outputs: ArrayLike, mask: ArrayLike) -> base.Decoded:
    """(N, C) worker logits and (N,) mask -> Decoded((K, C) logits, (K,) answered).

    Query k gets worker k's own output where it returned, the decoder's
    estimate otherwise; nothing is answered when no worker returned.
    """
    return self._systematic_decode(outputs, mask, None)

  def _decode_with_queries(self, outputs: ArrayLike, mask: ArrayLike, queries) -> base.Decoded:
    """As ``_decode``, the decoder also reading the sketch of the (K, ...) queries.

    Answers every query, even when no worker returned (from the sketch).
    """
    if not isinstance(outputs, jax.Array | np.ndarray):
      raise ValueError(
          "LearnedSystematicCode: worker outputs must be one (N, C) array of logits, "
          f"got {type(outputs).__name__}."
      )
    return self._systematic_decode(outputs, mask, self.sketch(jnp.asarray(queries)))

  def _systematic_decode(self, outputs, mask, sketches) -> base.Decoded:
    mask = self.check_mask(mask)
    outputs = jnp.asarray(outputs)
    k, missing = self.num_queries, self.max_parities - self.num_parities
    slots = jnp.pad(jnp.where(mask[:, None], outputs, 0), ((0, missing), (0, 0)))
    slot_mask = jnp.pad(mask, (0, missing))
    estimate = self.decoder(slots, slot_mask, sketches).astype(outputs.dtype)
    values = jnp.where(mask[:k, None], outputs[:k], estimate)
    if sketches is not None:
      return base.Decoded(values, jnp.ones((k,), bool))
    any_returned = jnp.any(mask)
    values = jnp.where(any_returned, values, jnp.zeros((), values.dtype))
    return base.Decoded(values, jnp.full((k,), any_returned))

  # -- training ---------------------------------------------------------------------

  def training_masks(self, key: jax.Array, num_masks: int) -> jax.Array:
    """(M, K + P_max) masks of masked straggler dropout over every deployment S in 1 .. P_max.

    Per mask: S uniform in 1 .. P_max, the parities beyond S absent (not
    deployed), and S of the K + S deployed workers absent at random. Train
    with the code at P = P_max.
    """
    k, p = self.num_queries, self.max_parities
    count_key, order_key = jax.random.split(key)
    deployed = jax.random.randint(count_key, (num_masks, 1), 1, p + 1)
    slots = jnp.arange(k + p)[None, :]
    in_deployment = slots < k + deployed
    scores = jnp.where(in_deployment, jax.random.uniform(order_key, (num_masks, k + p)), 2.0)
    ranks = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    return in_deployment & (ranks >= deployed)
