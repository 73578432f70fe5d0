"""Each round's record in the model store: where every participant stood and why.

The FederatedLearning status lists the detail of a bounded number of participants (it must
fit in one etcd object at any fleet size); the record keeps all of them, and the status
points at the latest one (`status.roundRecord`). Written when the round's model is
published, before the status that names it; writing it again gives the same object.
"""

from __future__ import annotations

import json
from typing import Any

from fl_contract import naming
from hub_manager import status as st
from hub_manager.job_runtime import JobRuntime


def round_record(
    status: dict[str, Any], runtime: JobRuntime, *, round_number: int, attempt: int
) -> dict[str, Any]:
    """The record of the round attempt in `status`: every participant's entry when this
    process followed the round (else those the status lists), and its rejected updates."""
    participants = st.round_participants(status)
    if runtime.round_states_of == (round_number, attempt):
        entries = st.participants_entries(participants, runtime.round_states)
    else:  # this process has not followed the round: what the status lists
        entries = list(status.get("participants") or [])
    return {
        "round": round_number,
        "attempt": attempt,
        "participantSummary": st.participant_summary(entries, listed=len(entries)),
        "participants": entries,
        "rejectedUpdates": [
            e
            for e in status.get("rejectedUpdates") or []
            if (e.get("round"), e.get("attempt")) == (round_number, attempt)
        ],
    }


async def write_round_record(
    status: dict[str, Any],
    runtime: JobRuntime,
    *,
    namespace: str,
    job: str,
    round_number: int,
    attempt: int,
) -> str:
    """Write the round's record; returns its URI."""
    record = round_record(status, runtime, round_number=round_number, attempt=attempt)
    key = naming.round_record_key(namespace=namespace, job=job, round_number=round_number)
    data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    ref = await runtime.store.put(key, data)
    return ref.uri
