"""Shared fixtures: a real local Ray head on loopback, started and stopped by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# Token auth switches itself on when ~/.ray/auth_token exists; the test head is loopback-only and
# must not depend on what the home directory holds.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
# Ray reads these when it is first imported (test modules import it at collection): set them before.
os.environ.update(RAY_ENV)
# One thread per torch process, here and in the processes the tests start: on a busy machine two OpenMP
# threads spin against the other load (SAC updates measured 5x slower on 2 cores beside one busy process).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RayHead:
    address: str
    dashboard: str
    pid: int

    def overrides(self) -> list[str]:
        return [f"cluster.address={self.address}", "cluster.node_ip_address=127.0.0.1"]


def finished_job(dashboard: str, job_id: str, timeout: float = 600.0) -> tuple[str, str]:
    """Wait for a submitted Ray job to end (polling its status); returns its final status and its logs."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, f"job {job_id} did not finish in {timeout:.0f} s"
        time.sleep(2)
    return str(status), client.get_job_logs(job_id)


def venv_path() -> str:
    """``PATH`` with this interpreter's folder first: a job's ``python`` is the one the tests run with."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def ray_bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> RayHead:
    """``ray start --head --block`` on 127.0.0.1 with the dashboard (for ``ray job submit``)."""
    port, dashboard_port = free_port(), free_port()
    log = open(tmp_path_factory.mktemp("ray") / "head.log", "w")  # noqa: SIM115 - lives as long as the head
    process = subprocess.Popen(
        [
            ray_bin("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--num-cpus=4", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
            "--disable-usage-stats",
        ],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV, "PATH": venv_path()}, cwd=ROOT,
    )  # fmt: skip
    head = RayHead(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", process.pid)
    wait_for_dashboard(head, process)
    yield head
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def wait_for_dashboard(head: RayHead, process: subprocess.Popen, timeout: float = 180.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{head.dashboard}/api/version", timeout=5) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"the Ray dashboard answered {error.code} to {head.dashboard}/api/version") from error
        except OSError:
            time.sleep(1.0)
    raise RuntimeError("the Ray dashboard did not come up in time")


@pytest.fixture
def ray_client(ray_head):
    """This test process connected to the shared head (disconnected afterwards)."""
    import ray

    ray.init(address=ray_head.address, _node_ip_address="127.0.0.1", namespace="dmsac-tests")
    yield ray_head
    ray.shutdown()
