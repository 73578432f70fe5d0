"""Reading the dataset catalogue file, with errors that name the file and the field."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from fl_contract.models import DatasetCatalogue

MAX_CATALOGUE_BYTES = 1024 * 1024  # a ConfigMap holds at most 1 MiB


class CatalogueError(ValueError):
    """The catalogue cannot be used; the message says where and what to fix."""


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What was read: the parsed catalogue or the error, and a digest to detect changes."""

    digest: str
    catalogue: DatasetCatalogue | None
    error: str | None


def parse_catalogue(text: str, *, source: str) -> DatasetCatalogue:
    """Parse catalogue YAML (`datasets: [...]`); an empty document is an empty catalogue."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogueError(
            f"dataset catalogue {source}: not valid YAML{where}; fix the syntax"
        ) from None
    if document is None:
        return DatasetCatalogue()
    if not isinstance(document, dict):
        raise CatalogueError(
            f"dataset catalogue {source}: expected a mapping with a 'datasets' list, "
            f"got {type(document).__name__}"
        )
    try:
        return DatasetCatalogue.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_field_path(err['loc'])}: {str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise CatalogueError(f"dataset catalogue {source}: {problems}") from None


def read_catalogue(path: Path) -> CatalogueSnapshot:
    """Read and parse the file; never raises for bad content (the error is in the snapshot)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return CatalogueSnapshot(
            digest="missing",
            catalogue=None,
            error=f"dataset catalogue {path}: no such file; mount it or fix --datasets",
        )
    except OSError as exc:
        return CatalogueSnapshot(
            digest=f"unreadable:{exc.errno}",
            catalogue=None,
            error=f"dataset catalogue {path}: cannot read ({exc.strerror})",
        )
    digest = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_CATALOGUE_BYTES:
        return CatalogueSnapshot(
            digest=digest,
            catalogue=None,
            error=f"dataset catalogue {path}: {len(data)} bytes, over {MAX_CATALOGUE_BYTES}",
        )
    try:
        text = data.decode("utf-8")
        return CatalogueSnapshot(digest, parse_catalogue(text, source=str(path)), None)
    except UnicodeDecodeError:
        return CatalogueSnapshot(digest, None, f"dataset catalogue {path}: not UTF-8 text")
    except CatalogueError as exc:
        return CatalogueSnapshot(digest, None, str(exc))


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"
