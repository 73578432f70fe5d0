"""ObjectMeta rules: names, generateName, labels/annotations, timestamps, uids."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

Cause = tuple[str, str, str]  # (reason, field, message)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

# Resources whose names must be DNS-1123 labels (63 chars) rather than subdomains.
LABEL_NAMED: frozenset[tuple[str, str]] = frozenset(
    {("", "namespaces"), ("", "services"), ("batch", "jobs")}
)
# RBAC objects only need a valid path segment (kube-apiserver's ValidateRBACName), so names
# such as "open-cluster-management:federated-learning:agent" are accepted, as on a cluster.
PATH_SEGMENT_NAMED: frozenset[tuple[str, str]] = frozenset(
    {
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
    }
)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (TypeError, ValueError, AttributeError):
            return None


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def _invalid(field: str, value: Any, why: str) -> Cause:
    return ("FieldValueInvalid", field, f'{field}: Invalid value: "{value}": {why}')


def check_name(
    name: str, *, label: bool, field: str = "metadata.name", path_segment: bool = False
) -> list[Cause]:
    if path_segment:
        if name in (".", "..") or "/" in name or "%" in name:
            return [_invalid(field, name, "may not be '.' or '..' and may not contain '/' or '%'")]
        return []
    if label:
        if len(name) > 63:
            return [_invalid(field, name, "must be no more than 63 characters")]
        if not _DNS_LABEL.match(name):
            return [
                _invalid(
                    field,
                    name,
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                    "or '-', and must start and end with an alphanumeric character (e.g. 'my-name', "
                    "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                )
            ]
        return []
    if len(name) > 253:
        return [_invalid(field, name, "must be no more than 253 characters")]
    if not _DNS_SUBDOMAIN.match(name):
        return [
            _invalid(
                field,
                name,
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
                "'-' or '.', and must start and end with an alphanumeric character (e.g. "
                "'example.com', regex used for validation is "
                "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            )
        ]
    return []


def _check_qualified_key(key: str, field: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes: list[Cause] = []
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        causes.append(_invalid(field, key, "prefix part must be a lowercase RFC 1123 subdomain"))
    if not name or len(name) > 63 or not _QUALIFIED.match(name):
        causes.append(
            _invalid(
                field,
                key,
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character, at most 63 characters",
            )
        )
    return causes


def check_meta(meta: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, dict):
        causes.append(_invalid("metadata.labels", labels, "must be a map of strings"))
        labels = {}
    for key, value in (labels or {}).items():
        causes += _check_qualified_key(key, "metadata.labels")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                _invalid(
                    "metadata.labels",
                    value,
                    "a valid label must be an empty string or consist of alphanumeric characters, "
                    "'-', '_' or '.', and must start and end with an alphanumeric character, at "
                    "most 63 characters",
                )
            )
    annotations = meta.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        causes.append(_invalid("metadata.annotations", annotations, "must be a map of strings"))
        annotations = {}
    total = 0
    for key, value in (annotations or {}).items():
        causes += _check_qualified_key(key, "metadata.annotations")
        if not isinstance(value, str):
            causes.append(_invalid("metadata.annotations", value, "must be a string"))
            continue
        total += len(key) + len(value)
    if total > 256 * 1024:
        causes.append(
            (
                "FieldValueTooLong",
                "metadata.annotations",
                "metadata.annotations: Too long: must have at most 262144 bytes",
            )
        )
    for n, ref in enumerate(meta.get("ownerReferences") or []):
        field = f"metadata.ownerReferences[{n}]"
        for required in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(required):
                causes.append(
                    (
                        "FieldValueRequired",
                        f"{field}.{required}",
                        f"{field}.{required}: Required value",
                    )
                )
    return causes
