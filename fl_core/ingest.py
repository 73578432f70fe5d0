"""The hub's path for one update: fetch, verify sha256, decode without copying, validate
and fold in, with hashing overlapped with everything else.

sha256 runs at about 2 GB/s, slower than reading, decoding (free: numpy views) and
accumulating (memory speed), so it bounds ingest. The store hands back the bytes with the
hash still computing on a helper thread; meanwhile the update is decoded, validated and
staged in the aggregator, and it counts only once the hash matches (`before_commit`). A
corrupt file is reported as such (IntegrityError) even when it also fails to decode or
validate: integrity is checked first whenever anything goes wrong.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from pathlib import Path

from fl_contract.weights import WeightsFormatError, decode_weights
from fl_core.store import IntegrityError, ModelStore
from fl_core.store.file import read_file_hashing
from fl_core.strategies import Rejected, RoundAggregator


async def ingest_update(
    store: ModelStore,
    *,
    uri: str,
    sha256: str,
    aggregator: RoundAggregator,
    num_examples: int,
    client: str,
) -> int:
    """Fold the update at `uri` into `aggregator`; returns its size in bytes.

    Raises IntegrityError (hash mismatch), ObjectNotFound, WeightsFormatError (undecodable)
    or Rejected (the aggregator refused it); in every case the aggregator is unchanged."""
    buffer, digest = await store.fetch(uri)
    await asyncio.to_thread(
        ingest_buffer,
        buffer,
        digest,
        sha256=sha256,
        uri=uri,
        aggregator=aggregator,
        num_examples=num_examples,
        client=client,
    )
    return len(buffer)


def ingest_file(
    path: Path, *, sha256: str, aggregator: RoundAggregator, num_examples: int, client: str
) -> int:
    """`ingest_update` for a local file, synchronously (benchmarks, tools)."""
    buffer, digest = read_file_hashing(path)
    ingest_buffer(
        buffer,
        digest,
        sha256=sha256,
        uri=str(path),
        aggregator=aggregator,
        num_examples=num_examples,
        client=client,
    )
    return len(buffer)


def ingest_buffer(
    buffer: memoryview,
    digest: Future[str],
    *,
    sha256: str,
    uri: str,
    aggregator: RoundAggregator,
    num_examples: int,
    client: str,
) -> None:
    def verify() -> None:
        actual = digest.result()
        if actual != sha256.lower():
            raise IntegrityError(
                f"{uri}: sha256 is {actual}, expected {sha256}; the object is corrupt or was "
                "replaced, refusing it"
            )

    try:
        weights = decode_weights(buffer)
        aggregator.add(weights, num_examples=num_examples, client=client, before_commit=verify)
    except (WeightsFormatError, Rejected):
        verify()
        raise
