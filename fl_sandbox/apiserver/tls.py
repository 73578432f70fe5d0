"""A throwaway self-signed serving certificate, so kubectl sends bearer tokens (client-go only
reads a kubeconfig's credentials for TLS servers).

One certificate per host and process: every server of a sandbox (a thousand clusters'
worth) shares it, instead of one openssl run and one key each."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

_MADE: dict[str, tuple[ssl.SSLContext, bytes]] = {}


async def self_signed(folder: Path, *, host: str) -> tuple[ssl.SSLContext, bytes]:
    """(server context, PEM certificate to trust) for `host` and localhost; made in
    `folder` the first time, the same ones after that."""
    made = _MADE.get(host)
    if made is not None:
        return made
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "tls=True needs the openssl command to make a serving certificate; install openssl or use tls=False"
        )
    key, cert = folder / "serving.key", folder / "serving.crt"
    san = (
        f"subjectAltName=IP:{host},DNS:localhost"
        if host[:1].isdigit()
        else f"subjectAltName=DNS:{host},DNS:localhost"
    )
    proc = await asyncio.create_subprocess_exec(
        openssl,
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "365",
        "-subj",
        "/CN=fl-sandbox-apiserver",
        "-addext",
        san,
        "-keyout",
        str(key),
        "-out",
        str(cert),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"openssl could not make a serving certificate: {err.decode().strip()}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    _MADE[host] = (context, cert.read_bytes())
    return _MADE[host]
