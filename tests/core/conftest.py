"""Fixtures for the FL core tests: a real S3-protocol server (moto) on loopback."""

from __future__ import annotations

import pytest

from fl_contract.models import StoreConfig
from tests.s3_server import CREDENTIALS, REGION, S3Server, s3_clock, s3_server

__all__ = ["s3_clock", "s3_server"]


@pytest.fixture
def moto_endpoint(s3_server: S3Server) -> str:
    return s3_server.endpoint


@pytest.fixture
def s3_config(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> StoreConfig:
    """A fresh bucket per test; credentials through the AWS_* environment, as on the hub."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    return StoreConfig(uri=f"s3://{bucket}/prefix", endpoint=s3_server.endpoint, region=REGION)
