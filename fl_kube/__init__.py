"""The project's Kubernetes runtime: one API client layer, informers, controllers, leases.

Only this package builds URLs or talks HTTP to an API server. The usual shape of a
component::

    api = await KubeApi.from_kubeconfig(path)              # None: in-cluster
    metrics = ControllerMetrics(registry)                  # one per registry
    informer = Informer(api, resources.FEDERATED_LEARNING)
    controller = Controller("federatedlearning", reconcile, metrics=metrics)
    informer.subscribe(lambda _type, obj: controller.enqueue(key_of(obj)))
    # run informer.run() and controller.run() (under LeaderElector.run when needed)

``reconcile(key)`` reads the informer cache, writes only differences, and raises
``TemporaryError`` / ``TerminalError`` or returns ``Result(requeue_after=...)``.
"""

from fl_kube.backoff import BackoffPolicy, RateLimiter, retry
from fl_kube.client import KubeApi, ObjectList, WatchEvent, make_api_client
from fl_kube.controller import Controller, Result, TemporaryError, TerminalError
from fl_kube.errors import (
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    TransportError,
    is_temporary,
)
from fl_kube.health import HealthServer
from fl_kube.informer import Informer, WatchSettings
from fl_kube.leader import LeaderElector
from fl_kube.metrics import ControllerMetrics
from fl_kube.waiting import wait_for
from fl_kube.workqueue import WorkQueue

__all__ = [
    "ApiError",
    "BackoffPolicy",
    "Conflict",
    "Controller",
    "ControllerMetrics",
    "Forbidden",
    "Gone",
    "HealthServer",
    "Informer",
    "Invalid",
    "KubeApi",
    "LeaderElector",
    "NotFound",
    "ObjectList",
    "RateLimiter",
    "Result",
    "TemporaryError",
    "TerminalError",
    "TransportError",
    "WatchEvent",
    "WatchSettings",
    "WorkQueue",
    "is_temporary",
    "make_api_client",
    "retry",
    "wait_for",
]
