"""The controllers' console scripts on a bad start: one line naming the flag, exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fl_kube.process import EXIT_USAGE


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port some other process listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig the processes load but never reach: they stop before the first request."""
    path = tmp_path / "kubeconfig"
    cluster = {"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}
    context = {"name": "c", "context": {"cluster": "c", "user": "u"}}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [context],
                "current-context": "c",
            }
        )
    )
    return path


@pytest.mark.parametrize("component", ["hub_manager", "spoke_agent"])
def test_metrics_port_in_use_is_one_line_and_exit_2(
    component: str, busy_port: int, kubeconfig: Path
) -> None:
    bind = f"127.0.0.1:{busy_port}"
    argv = [sys.executable, "-m", component, "--metrics-bind-address", bind]
    argv += ["--kubeconfig", str(kubeconfig), "--log-level", "WARNING"]
    if component == "hub_manager":
        argv += ["--no-addon-templates", "--no-leader-elect"]
        prog = "fl-hub-manager"
    else:
        argv += ["--hub-kubeconfig", str(kubeconfig), "--cluster-name", "cluster1"]
        argv += ["--namespace", "agents"]
        prog = "fl-spoke-agent"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{prog}: --metrics-bind-address {bind}: cannot listen on {bind}: address already "
        "in use; free the port or choose another"
    ], proc.stderr
