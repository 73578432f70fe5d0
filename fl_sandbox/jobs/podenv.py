"""Turn a Pod's first container into a local process launch: argv, env, cwd and files.

The sandbox has no container runtime, so a container becomes a process on this machine.
Every path the container would see through a mount is mapped to a local folder under the
pod's directory, and the same mapping is applied to the container's strings:

- each volume gets a local folder: ``configMap`` / ``secret`` volumes are written out as
  files (``items`` or every key), ``emptyDir`` is an empty folder, ``hostPath`` is the host
  path itself, ``persistentVolumeClaim`` is ``<runner root>/pvcs/<namespace>/<claim>``;
- each ``volumeMount.mountPath`` (plus ``subPath``) and the container's
  ``terminationMessagePath`` (default ``/dev/termination-log``) map to local paths;
- env values, ``command`` and ``args`` that start with one of those container paths (or
  ``--flag=<path>`` forms) are rewritten by prefix substitution, longest path first;
- ``workingDir`` is mapped the same way (a directory outside every mount lands under the
  pod's ``rootfs/``).

This is how the very Job spec the agent writes for a real cluster runs unchanged locally.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_KEEP_FROM_HOST = ("HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "SYSTEMROOT", "TZ")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

# Reads a ConfigMap or Secret: (kind, namespace, name) -> the object, or None when absent.
ObjectReader = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]


class ContainerConfigError(Exception):
    """The pod cannot start yet (missing ConfigMap/Secret/key): kubelet's
    CreateContainerConfigError. The caller retries until the Job's deadline."""


class UnsupportedPodSpec(Exception):
    """The pod spec asks for something a local process cannot do (e.g. no command)."""


@dataclass
class LaunchPlan:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_file: Path
    termination_policy: str
    mounts: list[tuple[str, Path]] = field(default_factory=list)  # container path -> local


@dataclass(frozen=True)
class PodDirs:
    """Where one pod's files live under the runner root."""

    root: Path  # the runner root
    namespace: str
    pod: str

    @property
    def pod_dir(self) -> Path:
        return self.root / "pods" / self.namespace / self.pod

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / self.namespace / f"{self.pod}.log"

    def pvc_dir(self, claim: str) -> Path:
        return self.root / "pvcs" / self.namespace / _safe(claim)


def map_path(value: str, mounts: list[tuple[str, Path]]) -> str:
    """Rewrite ``value`` when it starts with a mapped container path (longest first)."""
    for container_path, local in mounts:
        if value == container_path:
            return str(local)
        if value.startswith(container_path.rstrip("/") + "/"):
            return str(local) + value[len(container_path.rstrip("/")) :]
    return value


def map_token(value: str, mounts: list[tuple[str, Path]]) -> str:
    """Like ``map_path``, and also for the value of ``--flag=/path`` tokens."""
    mapped = map_path(value, mounts)
    if mapped != value or "=" not in value:
        return mapped
    flag, _, rest = value.partition("=")
    mapped_rest = map_path(rest, mounts)
    return value if mapped_rest == rest else f"{flag}={mapped_rest}"


def expand_vars(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(replace, value)


async def build_launch_plan(
    pod: Mapping[str, Any],
    *,
    dirs: PodDirs,
    read_object: ObjectReader,
    base_env: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """Materialise volumes and compute the process launch for the pod's first container."""
    spec = pod.get("spec") or {}
    namespace = str((pod.get("metadata") or {}).get("namespace") or dirs.namespace)
    containers = spec.get("containers") or []
    if not containers:
        raise UnsupportedPodSpec("spec.template.spec.containers is empty")
    volumes = list(spec.get("volumes") or [])
    sources = await _read_volume_sources(volumes, namespace=namespace, read_object=read_object)
    container_env = await _container_env(containers[0], pod=pod, read_object=read_object)
    return await asyncio.to_thread(
        _prepare,
        pod,
        dirs=dirs,
        volumes=volumes,
        sources=sources,
        container_env=container_env,
        base_env=base_env,
    )


def _prepare(
    pod: Mapping[str, Any],
    *,
    dirs: PodDirs,
    volumes: list[Mapping[str, Any]],
    sources: dict[str, dict[str, bytes] | None],
    container_env: dict[str, str],
    base_env: Mapping[str, str] | None,
) -> LaunchPlan:
    """The filesystem half of ``build_launch_plan`` (runs in a thread)."""
    metadata = pod.get("metadata") or {}
    container = (pod.get("spec") or {})["containers"][0]
    volume_dirs = _materialise_volumes(volumes, dirs=dirs, sources=sources)

    mounts: list[tuple[str, Path]] = []
    for index, mount in enumerate(container.get("volumeMounts") or []):
        where = f"containers[0].volumeMounts[{index}]"
        name = mount.get("name")
        mount_path = str(mount.get("mountPath") or "")
        if name not in volume_dirs:
            raise UnsupportedPodSpec(f"{where}.name {name!r} is not a volume of the pod")
        if not mount_path.startswith("/"):
            raise UnsupportedPodSpec(f"{where}.mountPath must be an absolute path")
        local = volume_dirs[name]
        sub_path = mount.get("subPath")
        if sub_path:
            local = local / _relative(str(sub_path), where=f"{where}.subPath")
            if not local.exists():
                local.mkdir(parents=True, exist_ok=True)
        mounts.append((_normal(mount_path), local))

    termination_path = str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH)
    termination_file = dirs.pod_dir / "termination-log"
    termination_file.parent.mkdir(parents=True, exist_ok=True)
    termination_file.write_bytes(b"")
    mounts.append((_normal(termination_path), termination_file))
    mounts.sort(key=lambda item: len(item[0]), reverse=True)

    env = _host_env(base_env)
    env["HOSTNAME"] = str(metadata.get("name") or dirs.pod)
    for key, value in container_env.items():
        env[key] = map_path(value, mounts)

    command = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if not command:
        raise UnsupportedPodSpec(
            "containers[0].command is empty: the sandbox runs a container's explicit command "
            "(it has no image entrypoints); set command in the Job template"
        )
    argv = [map_token(expand_vars(part, container_env), mounts) for part in command + args]

    working_dir = container.get("workingDir")
    cwd = dirs.pod_dir / "rootfs"
    if working_dir:
        normal = _normal(str(working_dir))
        mapped = map_path(normal, mounts)
        if mapped != normal:
            cwd = Path(mapped)
        elif normal != "/":
            cwd = cwd / _relative(normal.lstrip("/"), where="containers[0].workingDir")
    cwd.mkdir(parents=True, exist_ok=True)

    return LaunchPlan(
        argv=argv,
        env=env,
        cwd=cwd,
        termination_file=termination_file,
        termination_policy=str(container.get("terminationMessagePolicy") or "File"),
        mounts=mounts,
    )


def _host_env(base_env: Mapping[str, str] | None) -> dict[str, str]:
    """A small environment: the sandbox interpreter's bin folder first on PATH."""
    source = os.environ if base_env is None else base_env
    env = {key: source[key] for key in _KEEP_FROM_HOST if key in source}
    bin_dir = str(Path(sys.executable).parent)
    path = source.get("PATH", os.defpath)
    env["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


async def _container_env(
    container: Mapping[str, Any], *, pod: Mapping[str, Any], read_object: ObjectReader
) -> dict[str, str]:
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    env: dict[str, str] = {}
    for index, source in enumerate(container.get("envFrom") or []):
        where = f"containers[0].envFrom[{index}]"
        prefix = str(source.get("prefix") or "")
        for kind, ref_key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(ref_key)
            if ref is None:
                continue
            data = await _read_data(
                kind, namespace, str(ref.get("name") or ""), read_object, where=where
            )
            if data is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"{where}.{ref_key}: {kind.lower()} {ref.get('name')!r} not found"
                )
            for key, value in data.items():
                env[prefix + key] = value
    for index, item in enumerate(container.get("env") or []):
        where = f"containers[0].env[{index}]"
        name = str(item.get("name") or "")
        if not name:
            raise UnsupportedPodSpec(f"{where}.name is required")
        if "value" in item or "valueFrom" not in item:
            env[name] = expand_vars(str(item.get("value") or ""), env)
            continue
        found = await _value_from(
            item["valueFrom"], pod=pod, namespace=namespace, read_object=read_object, where=where
        )
        if found is not None:
            env[name] = found
    return env


async def _value_from(
    value_from: Mapping[str, Any],
    *,
    pod: Mapping[str, Any],
    namespace: str,
    read_object: ObjectReader,
    where: str,
) -> str | None:
    for kind, ref_key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        ref = value_from.get(ref_key)
        if ref is None:
            continue
        data = await _read_data(
            kind, namespace, str(ref.get("name") or ""), read_object, where=where
        )
        key = str(ref.get("key") or "")
        if data is not None and key in data:
            return data[key]
        if ref.get("optional"):
            return None
        missing = f"key {key!r} of " if data is not None else ""
        raise ContainerConfigError(
            f"{where}.valueFrom.{ref_key}: {missing}{kind.lower()} {ref.get('name')!r} not found"
        )
    field_ref = value_from.get("fieldRef")
    if field_ref is not None:
        return _field_value(pod, str(field_ref.get("fieldPath") or ""), where=where)
    resource_ref = value_from.get("resourceFieldRef")
    if resource_ref is not None:
        return "0"
    raise UnsupportedPodSpec(f"{where}.valueFrom: no supported source")


def _field_value(pod: Mapping[str, Any], path: str, *, where: str) -> str:
    metadata = pod.get("metadata") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise UnsupportedPodSpec(f"{where}.valueFrom.fieldRef.fieldPath {path!r} is not supported")


async def _read_data(
    kind: str, namespace: str, name: str, read_object: ObjectReader, *, where: str
) -> dict[str, str] | None:
    if not name:
        raise UnsupportedPodSpec(f"{where}: a {kind} reference needs a name")
    obj = await read_object(kind, namespace, name)
    if obj is None:
        return None
    return {
        key: value.decode("utf-8", "replace") for key, value in _object_bytes(kind, obj).items()
    }


def _object_bytes(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """Every key of a ConfigMap or Secret as bytes (Secret data and binaryData are base64)."""
    out: dict[str, bytes] = {}
    if kind == "ConfigMap":
        for key, value in (obj.get("data") or {}).items():
            out[key] = str(value).encode()
        for key, value in (obj.get("binaryData") or {}).items():
            out[key] = base64.b64decode(value)
    else:
        for key, value in (obj.get("data") or {}).items():
            out[key] = base64.b64decode(value)
        for key, value in (obj.get("stringData") or {}).items():
            out[key] = str(value).encode()
    return out


async def _read_volume_sources(
    volumes: list[Mapping[str, Any]], *, namespace: str, read_object: ObjectReader
) -> dict[str, dict[str, bytes] | None]:
    """The data of every configMap/secret volume, by volume name (None: optional, absent)."""
    sources: dict[str, dict[str, bytes] | None] = {}
    for index, volume in enumerate(volumes):
        if "configMap" not in volume and "secret" not in volume:
            continue
        kind = "ConfigMap" if "configMap" in volume else "Secret"
        source = volume.get("configMap") or volume.get("secret") or {}
        ref_name = str(source.get("name") or source.get("secretName") or "")
        obj = await read_object(kind, namespace, ref_name)
        if obj is None and not source.get("optional"):
            raise ContainerConfigError(f"volumes[{index}]: {kind.lower()} {ref_name!r} not found")
        sources[str(volume.get("name") or "")] = _object_bytes(kind, obj) if obj else None
    return sources


def _materialise_volumes(
    volumes: list[Mapping[str, Any]],
    *,
    dirs: PodDirs,
    sources: dict[str, dict[str, bytes] | None],
) -> dict[str, Path]:
    result: dict[str, Path] = {}
    for index, volume in enumerate(volumes):
        where = f"volumes[{index}]"
        name = str(volume.get("name") or "")
        if not name:
            raise UnsupportedPodSpec(f"{where}.name is required")
        local = dirs.pod_dir / "volumes" / _safe(name)
        if "hostPath" in volume:
            host_path = volume["hostPath"] or {}
            host = Path(str(host_path.get("path") or ""))
            if not host.is_absolute():
                raise UnsupportedPodSpec(f"{where}.hostPath.path must be absolute")
            if not host.exists() and host_path.get("type") in (None, "", "DirectoryOrCreate"):
                host.mkdir(parents=True, exist_ok=True)
            result[name] = host
        elif "persistentVolumeClaim" in volume:
            claim = str((volume["persistentVolumeClaim"] or {}).get("claimName") or "")
            if not claim:
                raise UnsupportedPodSpec(f"{where}.persistentVolumeClaim.claimName is required")
            local = dirs.pvc_dir(claim)
            local.mkdir(parents=True, exist_ok=True)
            result[name] = local
        elif "configMap" in volume or "secret" in volume:
            secret = "secret" in volume
            source = volume.get("secret") if secret else volume.get("configMap")
            source = source or {}
            data = sources.get(name) or {}
            local.mkdir(mode=0o700 if secret else 0o755, parents=True, exist_ok=True)
            # Secrets are private to this user on the shared host unless a mode says otherwise.
            default_mode = _mode(source.get("defaultMode"), 0o600 if secret else 0o644)
            items = source.get("items")
            wanted = (
                [
                    (str(i.get("key")), str(i.get("path") or i.get("key")), i.get("mode"))
                    for i in items
                ]
                if items
                else [(key, key, None) for key in data]
            )
            for key, rel, mode in wanted:
                if key not in data:
                    if source.get("optional"):
                        continue
                    raise ContainerConfigError(f"{where}: key {key!r} not found in its source")
                target = local / _relative(rel, where=f"{where}.items.path")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[key])
                target.chmod(_mode(mode, default_mode))
            result[name] = local
        else:  # emptyDir (and any other kind) is an empty folder
            local.mkdir(parents=True, exist_ok=True)
            result[name] = local
    return result


def _mode(value: object, default: int) -> int:
    return value & 0o777 if isinstance(value, int) and not isinstance(value, bool) else default


def _normal(path: str) -> str:
    normal = str(PurePosixPath(path))
    return normal if normal.startswith("/") else "/" + normal


def _relative(path: str, *, where: str) -> Path:
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or ".." in parts:
        raise UnsupportedPodSpec(f"{where} {path!r} must be a relative path without '..'")
    return Path(*parts) if parts else Path(".")


def _safe(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise UnsupportedPodSpec(f"invalid name {name!r}")
    return name
