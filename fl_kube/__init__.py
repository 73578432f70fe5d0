"""The project's Kubernetes runtime: one API client layer, informers, controllers, leases.

Only this package builds URLs or talks HTTP to an API server.
"""

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
from fl_kube.informer import Informer, WatchSettings
from fl_kube.metrics import ControllerMetrics
from fl_kube.workqueue import WorkQueue

__all__ = [
    "ApiError",
    "Conflict",
    "Controller",
    "ControllerMetrics",
    "Forbidden",
    "Gone",
    "Informer",
    "Invalid",
    "KubeApi",
    "NotFound",
    "ObjectList",
    "Result",
    "TemporaryError",
    "TerminalError",
    "TransportError",
    "WatchEvent",
    "WatchSettings",
    "WorkQueue",
    "is_temporary",
    "make_api_client",
]
