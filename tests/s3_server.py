"""moto's S3 server on loopback, with S3's rules for presigned URLs.

moto serves any presigned URL: it checks neither the signature nor the expiry, and it
serves anonymous requests. S3 (and MinIO, Ceph RGW) refuse all three, and the model
store's security depends on that, so this wraps moto's WSGI app in the same checks: a
query-string SigV4 signature recomputed with botocore's signer from the known secret (so a
URL changed in any part, path, method or expiry, is refused), `X-Amz-Date` plus
`X-Amz-Expires` against the server's clock, and 403 for a request with no signature.
Requests signed in the Authorization header (the hub's own credentials) pass to moto.
`skew` moves the server's clock, so a test can step past an expiry without waiting.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from threading import Thread
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.auth import S3SigV4QueryAuth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_REGION": REGION,
}

Environ = dict[str, Any]


class PresignedAuth:
    """WSGI middleware: S3's checks of query-string authentication, before moto."""

    def __init__(self, app: Any, *, secrets: Mapping[str, str]) -> None:
        self._app = app
        self._secrets = dict(secrets)
        self.skew = timedelta(0)
        self.refused: list[str] = []  # error codes, in order, for tests to read

    def __call__(self, environ: Environ, start_response: Any) -> Iterable[bytes]:
        params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if "X-Amz-Signature" in params:
            error = self._check_presigned(environ, params)
        elif "HTTP_AUTHORIZATION" in environ:
            error = None
        else:
            error = ("AccessDenied", "Anonymous access is forbidden for this operation")
        if error is None:
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        code, message = error
        self.refused.append(code)
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>"
        ).encode()
        start_response(
            "403 Forbidden",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _check_presigned(
        self, environ: Environ, params: Mapping[str, str]
    ) -> tuple[str, str] | None:
        key_id, _, scope = params.get("X-Amz-Credential", "").partition("/")
        secret = self._secrets.get(key_id)
        if secret is None:
            return ("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist")
        region = scope.split("/")[1] if scope.count("/") >= 3 else ""
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        parts = urlsplit(raw)
        query = "&".join(
            pair for pair in parts.query.split("&") if not pair.startswith("X-Amz-Signature=")
        )
        url = urlunsplit(("http", environ["HTTP_HOST"], parts.path, query, ""))
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, headers={})
        request.context["timestamp"] = params.get("X-Amz-Date", "")
        auth = S3SigV4QueryAuth(Credentials(key_id, secret), "s3", region)
        canonical = auth.canonical_request(request)
        expected = auth.signature(auth.string_to_sign(request, canonical), request)
        if expected != params["X-Amz-Signature"]:
            return (
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided",
            )
        signed = datetime.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = signed + timedelta(seconds=int(params.get("X-Amz-Expires", "0")))
        if datetime.now(UTC) + self.skew > expires:
            return ("AccessDenied", "Request has expired")
        return None


class S3Server:
    """moto behind `PresignedAuth`, on 127.0.0.1 and a free port, in a thread."""

    def __init__(self) -> None:
        self.auth = PresignedAuth(
            DomainDispatcherApplication(create_backend_app), secrets={ACCESS_KEY: SECRET_KEY}
        )
        self._server = make_server(
            "127.0.0.1", 0, self.auth, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> S3Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    def new_bucket(self) -> str:
        bucket = f"fl-{uuid.uuid4().hex[:20]}"
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=bucket)
        return bucket


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_clock(s3_server: S3Server) -> Iterator[PresignedAuth]:
    """The server's presigned-URL checks, its clock put back after the test."""
    yield s3_server.auth
    s3_server.auth.skew = timedelta(0)
