"""Run one emulated API server standalone:

    python -m fl_sandbox.apiserver --name hub --port 6443 --kubeconfig /tmp/hub.kubeconfig \
        [--crd-dir ../shared/ocm-crds] [--authorize] [--tls]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from .server import ApiServer


async def _serve(args: argparse.Namespace) -> None:
    server = ApiServer(
        name=args.name,
        crd_dirs=[Path(d) for d in args.crd_dir],
        history_limit=args.history_limit,
        authorize=args.authorize,
        tls=args.tls,
    )
    url = await server.start(host=args.host, port=args.port)
    server.write_kubeconfig(Path(args.kubeconfig))
    print(f"API server {args.name} ready at {url}; kubeconfig {args.kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fl_sandbox.apiserver", description=__doc__)
    parser.add_argument("--name", default="cluster")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", required=True, help="where to write the admin kubeconfig")
    parser.add_argument(
        "--crd-dir", action="append", default=[], help="folder of CRD YAML files (repeatable)"
    )
    parser.add_argument("--history-limit", type=int, default=10000)
    parser.add_argument(
        "--authorize", action="store_true", help="enforce RBAC for non-admin tokens"
    )
    parser.add_argument(
        "--tls", action="store_true", help="serve https (kubectl sends tokens only over TLS)"
    )
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
