"""Milvus servers for the tests: a Milvus standalone server and a Milvus Lite server, on loopback.

    def test_x(milvus_server):
        uri = milvus_server("standalone")     # or "lite-server"; http://127.0.0.1:PORT

One server of each kind serves the whole test run, shared by the xdist workers: the first test that
asks starts it (under a file lock in a folder the run's first process made, named by RECINDEX_TEST_MILVUS
in the environment the workers inherit) and the others find it there. Tests share a server, so each
uses collection names of its own. The run's first process stops every server when the run ends
(pytest_unconfigure); should it die first, each server's supervisor (tests/milvus_supervisor.py) sees
its owner gone and stops the server itself.

- standalone: `milvus-server --data DIR` from `pip install milvus==2.3.5` (Milvus 2.3.5 with embedded
  etcd and RocksMQ), in a network namespace of its own with one loopback port relayed to it (see
  milvus_supervisor.py); up in 15 s on an idle machine, up to a minute on a busy one.
- lite-server: `milvus-lite server --data-dir DIR --host 127.0.0.1 --port P` (milvus-lite, the milvus
  extra), up in about a second.

A test that needs a server skips, saying why, only where the server cannot start (not installed, no
network namespace). With RECINDEX_REQUIRE_MILVUS_SERVERS=1 (CI sets it) that is an error instead, so a
server that stopped starting cannot turn into silently skipped tests. `MilvusProcess` starts a server of
one's own for a test that must stop and restart it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

REGISTRY_ENV = "RECINDEX_TEST_MILVUS"  # the run's folder of shared servers, set by its first process
OWNER_ENV = "RECINDEX_TEST_MILVUS_OWNER"  # that process's pid: servers stop when it is gone
REQUIRE_ENV = "RECINDEX_REQUIRE_MILVUS_SERVERS"
REGISTRY_PREFIX = "recindex-milvus-"
SUPERVISOR = Path(__file__).with_name("milvus_supervisor.py")
KINDS = {
    "standalone": ("milvus-server", "pip install milvus==2.3.5"),
    "lite-server": ("milvus-lite", "pip install milvus-lite"),
}
START_TIMEOUT_S = 300.0  # the supervisor gives up at 240 s; this allows for its own start
STOP_TIMEOUT_S = 40.0
_owner_key = pytest.StashKey[Path]()


class ServerUnavailable(RuntimeError):
    """The server cannot start here; the message says why."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def milvus_binaries(into: Path) -> Path | None:
    """The standalone server's binaries, unpacked once per run into `into` (the `milvus` package
    unpacks 250 MB into every data folder otherwise); None where the package lays them out differently."""
    try:
        import milvus
    except ImportError:
        return None
    unpack = getattr(milvus, "_initialize_data_files", None)
    if unpack is None:
        return None
    if not (into / "bin" / "milvus").exists():
        unpack(str(into))
    return into / "bin"


class MilvusProcess:
    """One server of `kind` on a data folder, run by a supervisor; `start()` returns its uri."""

    def __init__(self, kind: str, folder: Path, binaries: Path | None = None):
        if kind not in KINDS:
            raise ValueError(f"no Milvus server kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, self.folder, self.binaries = kind, folder, binaries
        self.uri: str | None = None
        self.port = 0  # the loopback port the tests use; kept, so that a restarted server has the same uri
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        executable, install = KINDS[self.kind]
        found = shutil.which(executable)
        if found is None:
            raise ServerUnavailable(f"{executable} is not installed ({install})")
        data = self.folder / "data"
        owner = os.environ.get(OWNER_ENV, str(os.getpid()))
        supervise = [sys.executable, str(SUPERVISOR), "--owner", owner, "--ready", str(self.ready)]
        supervise += ["--log", str(self.folder / "server.log")]
        if self.kind == "lite-server":
            port = self.port or free_port()
            serve = [found, "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
            return [*supervise, "--port", str(port), "--", *serve]
        if self.binaries is not None and not (data / "bin").exists():
            data.mkdir(parents=True, exist_ok=True)
            (data / "bin").symlink_to(self.binaries, target_is_directory=True)
        supervise += ["--port", str(self.port), "--isolate", "19530"]
        return [*supervise, "--", found, "--data", str(data)]

    @property
    def ready(self) -> Path:
        return self.folder / "ready.json"

    def start(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ready.unlink(missing_ok=True)
        command = self.command()
        log = (self.folder / "supervisor.log").open("ab")
        with log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerUnavailable(f"the {self.kind} Milvus server did not start: {self.last_lines()}")
            time.sleep(0.2)
        self.port = json.loads(self.ready.read_text())["port"]
        self.uri = f"http://127.0.0.1:{self.port}"
        return self.uri

    def last_lines(self) -> str:
        lines = []
        for name in ("supervisor.log", "server.log"):
            path = self.folder / name
            if path.exists():
                lines += path.read_text(errors="replace").strip().splitlines()[-4:]
        return " | ".join(lines) or "no output"

    def kill_9(self) -> None:
        """SIGKILL to the server itself (its whole process group), as a crash would end it: nothing is
        flushed. Its supervisor then ends too; `start()` runs it again on the same folder and port."""
        if self.process is None:
            return
        supervisor = self.process.pid
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children")
        for child in children.read_text().split() if children.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(child), signal.SIGKILL)  # the server runs in a session of its own
        self.process.wait(STOP_TIMEOUT_S)
        self.process = None
        self.uri = None

    def stop(self) -> None:
        if self.process is not None:
            stop_supervisor(self.process.pid)
            self.process.wait()
            self.process = None
        self.uri = None


def stop_supervisor(pid: int) -> None:
    """SIGTERM to a supervisor, which stops its server; SIGKILL if it has not ended in time."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child: reap it, or it stays a zombie that kill(pid, 0) still finds
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@contextmanager
def locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def shared_server(kind: str) -> str:
    """The uri of the run's server of `kind`, started by the first caller (in any worker)."""
    registry = Path(os.environ[REGISTRY_ENV])
    folder = registry / kind
    with locked(registry / f"{kind}.lock"):
        known, failed = registry / f"{kind}.json", registry / f"{kind}.failed"
        if failed.exists():
            raise ServerUnavailable(failed.read_text())
        if known.exists():
            return json.loads(known.read_text())["uri"]
        binaries = None
        if kind == "standalone":
            with locked(registry / "binaries.lock"):
                binaries = milvus_binaries(registry / "binaries")
        server = MilvusProcess(kind, folder, binaries)
        try:
            uri = server.start()
        except ServerUnavailable as error:
            failed.write_text(str(error))
            raise
        known.write_text(json.dumps({"uri": uri, "pid": server.process.pid}))
        return uri


def shared_binaries() -> Path | None:
    registry = Path(os.environ[REGISTRY_ENV])
    with locked(registry / "binaries.lock"):
        return milvus_binaries(registry / "binaries")


def unavailable(reason: str):
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: Milvus servers must start here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def milvus_server():
    """milvus_server(kind) -> the uri of the run's Milvus server of that kind ("standalone",
    "lite-server"); the test skips, with the reason, where that server cannot start."""
    pytest.importorskip("pymilvus", reason="the Milvus backend needs pymilvus (pip install recindex[milvus])")

    def uri(kind: str) -> str:
        try:
            return shared_server(kind)
        except ServerUnavailable as error:
            unavailable(str(error))

    return uri


def remove_stale_registries(parent: Path) -> None:
    """Folders of runs whose first process is gone (killed before it could clean up: the servers
    stopped with it, their data and unpacked binaries did not)."""
    for folder in parent.glob(f"{REGISTRY_PREFIX}*"):
        owner = folder / "owner"
        try:
            os.kill(int(owner.read_text()), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue  # another user's, or being written: not ours to judge


def pytest_configure(config):
    if REGISTRY_ENV in os.environ:  # an xdist worker, or a run inside a run: the servers are the first's
        return
    remove_stale_registries(Path(tempfile.gettempdir()))
    folder = Path(tempfile.mkdtemp(prefix=REGISTRY_PREFIX))
    (folder / "owner").write_text(str(os.getpid()))
    os.environ[REGISTRY_ENV] = str(folder)
    os.environ[OWNER_ENV] = str(os.getpid())
    config.stash[_owner_key] = folder


def pytest_unconfigure(config):
    folder = config.stash.get(_owner_key, None)
    if folder is None:
        return
    for known in folder.glob("*.json"):
        stop_supervisor(json.loads(known.read_text())["pid"])
    shutil.rmtree(folder, ignore_errors=True)
    os.environ.pop(REGISTRY_ENV, None)
    os.environ.pop(OWNER_ENV, None)
