"""Which group/version/plural the server serves right now (built-ins, OCM kinds, CRDs)."""

from __future__ import annotations

from collections.abc import Iterable

from .builtin_types import ResourceType

GroupResource = tuple[str, str]


class TypeRegistry:
    """Lookup by (group, version, plural) for routing and by (group, plural) for storage."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._versions: dict[GroupResource, list[str]] = {}

    def add(self, types: Iterable[ResourceType]) -> None:
        for t in types:
            key = (t.group, t.version, t.plural)
            if key not in self._by_gvr:
                self._versions.setdefault(t.group_resource, []).append(t.version)
            self._by_gvr[key] = t

    def remove_group_resource(self, gr: GroupResource) -> None:
        for version in self._versions.pop(gr, []):
            self._by_gvr.pop((gr[0], version, gr[1]), None)

    def replace_group_resource(self, gr: GroupResource, types: list[ResourceType]) -> None:
        self.remove_group_resource(gr)
        self.add(types)

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def preferred(self, gr: GroupResource) -> ResourceType | None:
        versions = self._versions.get(gr)
        if not versions:
            return None
        return self._by_gvr[(gr[0], versions[0], gr[1])]

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions in first-registered order (the first is the preferred one)."""
        out: dict[str, list[str]] = {}
        for t in self._by_gvr.values():
            versions = out.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self._by_gvr.values() if t.group == group and t.version == version]

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        for t in self._by_gvr.values():
            if t.group == group and t.kind == kind:
                return t
        return None
