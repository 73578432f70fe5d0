"""Telling a stale informer cache from a changed object, so that writes are not repeated.

After a write the cache lags until the watch delivers the event. A controller that compares
the desired object with the cache would write again in that window; remembering what it
wrote (and at which resourceVersion) lets it wait for the cache instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fl_kube.informer import Informer


def caught_up(informer: Informer, resource_version: str | None) -> bool:
    """True once the informer has seen events up to `resource_version` (or cannot tell)."""
    if not resource_version or not informer.resource_version:
        return not resource_version
    try:
        return int(informer.resource_version) >= int(resource_version)
    except ValueError:
        return True


@dataclass(frozen=True)
class Written:
    fingerprint: str
    resource_version: str | None


class WriteMemo:
    """What this process last wrote per slot, to skip writes the cache has not caught up to."""

    def __init__(self, informer: Informer) -> None:
        self._informer = informer
        self._written: dict[tuple[str, ...], Written] = {}

    def needs_write(self, slot: tuple[str, ...], fingerprint: str, *, cached_matches: bool) -> bool:
        if cached_matches:
            return False
        last = self._written.get(slot)
        if last is None or last.fingerprint != fingerprint:
            return True
        # Same write as last time and the cache differs: only stale if it has not caught up.
        return caught_up(self._informer, last.resource_version)

    def wrote(self, slot: tuple[str, ...], fingerprint: str, obj: dict[str, Any]) -> None:
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        self._written[slot] = Written(fingerprint, str(rv) if rv else None)

    def forget(self, slot: tuple[str, ...]) -> None:
        self._written.pop(slot, None)


def contains(current: Any, desired: Any) -> bool:
    """True when every field of `desired` has the same value in `current` (fields the
    server added, such as defaults and status, are ignored)."""
    if isinstance(desired, dict):
        return isinstance(current, dict) and all(
            key in current and contains(current[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(current, list)
            and len(current) == len(desired)
            and all(contains(c, d) for c, d in zip(current, desired, strict=True))
        )
    return bool(current == desired)
