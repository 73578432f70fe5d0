"""An emulated Kubernetes API server for the sandbox and the tests.

One `ApiServer` per emulated cluster, served with aiohttp on loopback and reached through the
real `kubernetes_asyncio` client or `kubectl`. It reproduces what our controllers rely on:
CRUD with kube metadata and optimistic concurrency, patches (merge, JSON, strategic, apply),
the status subresource, watch with resume/410/bookmarks, selectors, finalizers, garbage
collection, CRD structural schemas, discovery, Table output, RBAC, and fault injection.
"""

from .faults import FaultInjector
from .server import ApiServer, RequestRecord

__all__ = ["ApiServer", "FaultInjector", "RequestRecord"]
