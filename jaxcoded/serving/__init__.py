"""The Ray runtime: a coded inference service over worker actors (docs/serving.md).

  types       answers, explicit errors, records and counters
  batching    queries into groups of K
  collection  one group's outputs: wait, decode early, note failures
  service     ``CodedService``: the master (submit, dispatch, release, shutdown)
  worker      the worker actor; latency: injected delays
  actors      placement (SPREAD), the resource check, kills that wait for death
  http        the Ray Serve front end (POST /predict, GET /stats, GET /healthz)

  from jaxcoded import serving
  service = serving.CodedService.start(deployment, input_shape=(8, 8, 1),
                                       latency=serving.latency_profile(6, model), timeout_s=0.5)
  labels, errors = service.predict(images)
  service.shutdown()

Needs Ray (``pip install 'jaxcoded[ray]'``). See docs/serving.md.
"""

from jaxcoded.serving.latency import LatencyInjector, WorkerLatency, latency_profile
from jaxcoded.serving.service import CodedService, Profile, default_min_returns
from jaxcoded.serving.types import (
    Answer,
    GroupRecord,
    QueryNotDecoded,
    ServiceStats,
    ServiceStopped,
    WorkerStatus,
)
from jaxcoded.serving.worker import CodedWorker, TaskSource

__all__ = [
    "Answer",
    "CodedService",
    "CodedWorker",
    "GroupRecord",
    "LatencyInjector",
    "Profile",
    "QueryNotDecoded",
    "ServiceStats",
    "ServiceStopped",
    "TaskSource",
    "WorkerLatency",
    "WorkerStatus",
    "default_min_returns",
    "latency_profile",
]
