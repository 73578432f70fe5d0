"""``fl-sandbox up`` as a user runs it: one ready line, kubectl sees available clusters and
RBAC is enforced, a second ``up`` in the same folder is refused, SIGTERM stops it cleanly;
bad options are one line and exit code 2."""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from fl_sandbox.cli import main

READY_TIMEOUT = 60.0


async def _read_line(stream: asyncio.StreamReader) -> str:
    async with asyncio.timeout(READY_TIMEOUT):
        return (await stream.readline()).decode()


async def test_up_prints_ready_and_kubectl_lists_available_clusters(
    tmp_path: Path, crd_dir: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    workdir = tmp_path / "sb"
    process = await asyncio.create_subprocess_exec(
        *_up(workdir, crd_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await _read_line(process.stdout)
        assert line.startswith("fl-sandbox ready:"), line
        hub_kubeconfig = workdir / "hub.kubeconfig"
        assert str(hub_kubeconfig) in line
        for name in ("cluster1", "cluster2"):
            assert f"{name}={workdir / 'clusters' / f'{name}.kubeconfig'}" in line

        listing = await asyncio.create_subprocess_exec(
            kubectl,
            "--kubeconfig",
            str(hub_kubeconfig),
            "get",
            "managedclusters",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(listing.communicate(), timeout=30)
        assert listing.returncode == 0, err.decode()
        rows = [row.split() for row in out.decode().splitlines()]
        header = rows[0]
        assert "JOINED" in header
        assert "AVAILABLE" in header
        by_name = {row[0]: row for row in rows[1:]}
        assert sorted(by_name) == ["cluster1", "cluster2"]
        for row in by_name.values():
            # Rows are "NAME HUB-ACCEPTED [URL] JOINED AVAILABLE AGE": read from the right.
            assert row[-3:-1] == ["True", "True"], row

        # RBAC is enforced by default: cluster1's agent may not touch the jobs.
        assert line.rstrip().endswith("RBAC enforced"), line
        agent = workdir / "clusters" / "cluster1" / "federated-learning-hub.kubeconfig"
        code, refused = await _kubectl(kubectl, agent, "delete", "fl", "--all", "-A")
        assert code != 0
        assert "Error from server (Forbidden)" in refused, refused
        assert 'cannot list resource "federatedlearnings"' in refused, refused
        code, admin_err = await _kubectl(kubectl, hub_kubeconfig, "get", "fl", "-A")
        assert code == 0, admin_err

        # A second sandbox in the same folder is refused in one line; the first goes on.
        second = await asyncio.create_subprocess_exec(
            *_up(workdir, crd_dir), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        second_out, second_err = await asyncio.wait_for(second.communicate(), timeout=60)
        assert second.returncode == 2
        assert second_out == b""
        assert second_err.decode().splitlines() == [
            f"fl-sandbox: --dir {workdir.resolve()} is in use by another sandbox "
            f"(pid {process.pid}): stop it or choose another folder"
        ]
        code, _ = await _kubectl(kubectl, hub_kubeconfig, "get", "managedclusters")
        assert code == 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest, errors = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, errors.decode()
    assert rest.decode().strip() == ""  # exactly one line on stdout
    assert "Traceback" not in errors.decode()
    # The lock went with the process: the folder is free for the next sandbox.
    fd = os.open(workdir / ".fl-sandbox.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def _up(workdir: Path, crd_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fl_sandbox",
        "up",
        "--clusters",
        "2",
        "--dir",
        str(workdir),
        "--no-hub-manager",
        "--no-agents",
        "--crd-dir",
        str(crd_dir),
    ]


async def _kubectl(kubectl: str, kubeconfig: Path, *args: str) -> tuple[int, str]:
    """(exit code, stderr) of a kubectl command."""
    proc = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    return int(proc.returncode or 0), err.decode()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["up", "--clusters", "0", "--dir", "x"], "--clusters: must be at least 1"),
        (["up", "--clusters", "two", "--dir", "x"], "is not a whole number"),
        (["up", "--clusters", "2"], "--dir"),
        (["up", "--dir", "x", "--crd-dir", "/nonexistent"], "is not a directory"),
        (["launch"], "invalid choice"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err
