"""What a refused result record says: the field when there is one, never an empty prefix."""

from __future__ import annotations

import pytest

from spoke_agent.results import ResultError, parse_result
from tests.agent.test_job_manifest import make_spec


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ("{not json", "the result record is not a TrainingResult (Invalid JSON: "),
        (
            '{"update_uri": "x"}',
            "the result record is not a TrainingResult (sha256: Field required",
        ),
    ],
)
def test_an_invalid_result_record_says_what_is_wrong(message: str, detail: str) -> None:
    with pytest.raises(ResultError) as info:
        parse_result(message, make_spec())
    assert info.value.reason == "ResultInvalid"
    assert str(info.value).startswith(detail), str(info.value)
    assert "(:" not in str(info.value)
