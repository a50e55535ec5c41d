"""Real PostgreSQL and Redis servers for the team tests, started on loopback in a temp dir.

Debian's `postgresql` and `redis-server` packages are found (or installed with apt-get when
we are root, as `dev.py test` does for chromium), then started on free loopback ports with
their data in a temporary directory: nothing of the machine's own clusters is touched.
PostgreSQL refuses to run as root, so as root its tools run as the `postgres` user the
package creates. When neither finding nor installing works the tests skip, and say why
loudly (a skipped team test in CI is a missing server, not a pass).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_install_failed: dict[tuple[str, ...], str] = {}


def _install(packages: list[str]) -> str | None:
    """apt-get install `packages`; None when done, else why it could not be (tried once a
    session: a failure is remembered, not paid for again by every test module)."""
    if tuple(packages) in _install_failed:
        return _install_failed[tuple(packages)]
    why = _apt_get(packages)
    if why is not None:
        _install_failed[tuple(packages)] = why
    return why


def _apt_get(packages: list[str]) -> str | None:
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root, or no apt-get: install them with `apt-get install -y " + \
            " ".join(packages) + "`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            return f"{' '.join(cmd)} failed: {done.stderr[-400:]}"
    return None


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _skip_loudly(what: str, why: str) -> None:
    """Skip, said past pytest's capture (a warning would fail the run under
    filterwarnings=error) and again in the -ra summary."""
    message = f"TEAM TESTS SKIPPED: no {what} server could be found or installed ({why})"
    print(f"\n{'!' * 20} {message} {'!' * 20}", file=sys.__stderr__, flush=True)
    pytest.skip(message)


class PostgresServer:
    """One PostgreSQL cluster in a temp dir, on a loopback port; `stop()` and `start()`
    let a test take the server away mid-run and bring it back."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="llmdispatch-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            shutil.chown(self.dir, "postgres", "postgres")
            self.dir.chmod(0o700)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bin / tool), *args], capture_output=True,
                              text=True, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout[-800:]} {done.stderr[-800:]}")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c full_page_writes=off")  # commits still acknowledged once in the log
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"),
                  "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database: each test its own."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self, exe: str) -> None:
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="llmdispatch-redis-")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bin_dir = _pg_bin()
    if bin_dir is None:
        why = _install(["postgresql"])
        bin_dir = _pg_bin()
        if bin_dir is None:
            _skip_loudly("PostgreSQL", why or "installed, yet no initdb was found")
    assert bin_dir is not None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _skip_loudly("PostgreSQL", "psycopg is not installed: pip install 'psycopg[binary]'")
    return PostgresServer(bin_dir)


def start_redis() -> RedisServer:
    exe = shutil.which("redis-server")
    if exe is None:
        why = _install(["redis-server"])
        exe = shutil.which("redis-server")
        if exe is None:
            _skip_loudly("Redis", why or "installed, yet no redis-server was found")
    assert exe is not None
    try:
        import redis  # noqa: F401
    except ImportError:
        _skip_loudly("Redis", "the redis client is not installed: pip install redis")
    return RedisServer(exe)
