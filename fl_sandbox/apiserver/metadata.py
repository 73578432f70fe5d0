"""ObjectMeta rules: names, generateName, labels/annotations, owners, finalizers, timestamps,
uids; kube-apiserver's formats and wording (k8s.io/apimachinery validation)."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

Cause = tuple[str, str, str]  # (reason, field, message)

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


def show(value: Any) -> str:
    """A value the way field errors print it (Go's %q for strings, JSON with sorted keys, as
    Go encodes a map, otherwise)."""
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def invalid(field: str, value: Any, why: str) -> Cause:
    return ("FieldValueInvalid", field, f"{field}: Invalid value: {show(value)}: {why}")


# ---- kube's string formats (k8s.io/apimachinery/pkg/util/validation), with its wording ----
def _regex_error(message: str, regex: str, *examples: str) -> str:
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{regex}')"


_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _LABEL_FMT + "(\\." + _LABEL_FMT + ")*"
_DNS1035_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_QUALIFIED_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_DNS_LABEL = re.compile(f"^{_LABEL_FMT}$")
_DNS_SUBDOMAIN = re.compile(f"^{_SUBDOMAIN_FMT}$")
_DNS1035 = re.compile(f"^{_DNS1035_FMT}$")
_QUALIFIED = re.compile(f"^{_QUALIFIED_FMT}$")
_LABEL_VALUE = re.compile(f"^({_QUALIFIED_FMT})?$")
_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)


def _too_long(limit: int, unit: str = "characters") -> str:
    return f"must be no more than {limit} {unit}"


def dns1123_label_errors(value: str) -> list[str]:
    errs = [_too_long(63)] if len(value) > 63 else []
    if not _DNS_LABEL.match(value):
        if _DNS_SUBDOMAIN.match(value):
            errs.append("must not contain dots")
        else:
            errs.append(
                _regex_error(
                    "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character",
                    _LABEL_FMT,
                    "my-name",
                    "123-abc",
                )
            )
    return errs


def dns1123_subdomain_errors(value: str, *, unit: str = "characters") -> list[str]:
    """``unit="bytes"``: as kube's newer validators (label keys, so annotation keys and
    finalizers too) count and say; names and namespaces are checked by the older ones."""
    errs = [_too_long(253, unit)] if len(value.encode()) > 253 else []
    if not _DNS_SUBDOMAIN.match(value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.', and must start and end with an alphanumeric character",
                _SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


def dns1035_label_errors(value: str) -> list[str]:
    errs = [_too_long(63)] if len(value) > 63 else []
    if not _DNS1035.match(value):
        errs.append(
            _regex_error(
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
                "start with an alphabetic character, and end with an alphanumeric character",
                _DNS1035_FMT,
                "my-name",
                "abc-123",
            )
        )
    return errs


def qualified_name_errors(value: str) -> list[str]:
    """Label keys, annotation keys (lowercased first) and finalizers: [prefix/]name."""
    parts = value.split("/")
    if len(parts) > 2:
        return [
            "a valid label key "
            + _regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    errs: list[str] = []
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += [f"prefix part {m}" for m in dns1123_subdomain_errors(prefix, unit="bytes")]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name.encode()) > 63:
        errs.append(f"name part {_too_long(63, 'bytes')}")
    if not _QUALIFIED.match(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_MSG, _QUALIFIED_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def label_value_errors(value: str) -> list[str]:
    errs = [_too_long(63, "bytes")] if len(value.encode()) > 63 else []
    if not _LABEL_VALUE.match(value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, "
                "'-', '_' or '.', and must start and end with an alphanumeric character",
                f"({_QUALIFIED_FMT})?",
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def path_segment_errors(value: str, *, prefix: bool = False) -> list[str]:
    """What names of RBAC objects and embedded resources must be (ValidatePathSegmentName)."""
    if not prefix and value in (".", ".."):
        return [f"may not be '{value}'"]
    return [f"may not contain '{c}'" for c in ("/", "%") if c in value]


def check_name(
    name: str, *, label: bool, field: str = "metadata.name", path_segment: bool = False
) -> list[Cause]:
    if path_segment:
        errs = path_segment_errors(name)
    elif label:
        errs = dns1123_label_errors(name)
    else:
        errs = dns1123_subdomain_errors(name)
    return [invalid(field, name, why) for why in errs]


ANNOTATIONS_LIMIT = 256 * 1024  # bytes of keys and values together


def check_meta(meta: dict[str, Any], *, path: str = "metadata") -> list[Cause]:
    """Labels, annotations, ownerReferences and finalizers, as kube-apiserver validates them
    in every object's metadata (top-level and embedded)."""
    causes: list[Cause] = []
    labels_field = f"{path}.labels"
    labels = meta.get("labels")
    if labels is not None and not isinstance(labels, dict):
        causes.append(invalid(labels_field, labels, "must be a map of strings"))
        labels = {}
    for key, value in (labels or {}).items():
        causes += [invalid(labels_field, key, why) for why in qualified_name_errors(key)]
        if not isinstance(value, str):
            causes.append(invalid(labels_field, value, "must be a string"))
            continue
        causes += [invalid(labels_field, value, why) for why in label_value_errors(value)]
    annotations_field = f"{path}.annotations"
    annotations = meta.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        causes.append(invalid(annotations_field, annotations, "must be a map of strings"))
        annotations = {}
    total = 0
    for key, value in (annotations or {}).items():
        causes += [
            invalid(annotations_field, key, why) for why in qualified_name_errors(key.lower())
        ]
        if not isinstance(value, str):
            causes.append(invalid(annotations_field, value, "must be a string"))
            continue
        total += len(key.encode()) + len(value.encode())
    if total > ANNOTATIONS_LIMIT:
        causes.append(
            (
                "FieldValueTooLong",
                annotations_field,
                f"{annotations_field}: Too long: may not be more than {ANNOTATIONS_LIMIT} bytes",
            )
        )
    causes += _check_owner_references(meta.get("ownerReferences") or [], f"{path}.ownerReferences")
    causes += _check_finalizers(meta.get("finalizers") or [], f"{path}.finalizers")
    return causes


def _check_owner_references(refs: list[Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    controller = ""
    for ref in refs:
        if not isinstance(ref, dict):
            causes.append(invalid(field, ref, "must be an object"))
            continue
        api_version = str(ref.get("apiVersion") or "")
        version = api_version.rpartition("/")[2] if api_version.count("/") <= 1 else ""
        if not version:
            causes.append(invalid(f"{field}.apiVersion", api_version, "version must not be empty"))
        for key in ("kind", "name", "uid"):
            if not ref.get(key):
                causes.append(invalid(f"{field}.{key}", ref.get(key) or "", "must not be empty"))
        if api_version == "v1" and ref.get("kind") == "Event":
            causes.append(invalid(field, ref, "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            this = f"{ref.get('kind')}/{ref.get('name')}"
            if controller:
                causes.append(
                    invalid(
                        field,
                        refs,
                        'Only one reference can have Controller set to true. Found "true" in '
                        f"references for {controller} and {this}",
                    )
                )
            else:
                controller = this
    return causes


def _check_finalizers(finalizers: list[Any], field: str) -> list[Cause]:
    causes: list[Cause] = []
    for finalizer in finalizers:
        text = str(finalizer)
        causes += [invalid(field, text, why) for why in qualified_name_errors(text)]
    if "orphan" in finalizers and "foregroundDeletion" in finalizers:
        causes.append(
            invalid(field, finalizers, "finalizer orphan and foregroundDeletion cannot be both set")
        )
    return causes
