"""Throwaway Redis and PostgreSQL servers on spare ports in temporary folders, for tests that stop or restart
them: the machine's own services are never touched."""
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.services import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ThrowawayRedis:
    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "yes",
                        "--pidfile", str(self.folder / "redis.pid"), "--logfile", str(self.folder / "redis.log")],
                       check=True)
        _until(lambda: redis.Redis(port=self.port).ping())

    def stop(self) -> None:
        """Shut down without saving: every queued message is lost, as in a crash of an in-memory broker."""
        try:
            redis.Redis(port=self.port).shutdown(nosave=True)
        except redis.ConnectionError:
            pass


class ThrowawayPostgres:
    """initdb in a folder owned by postgres (the server refuses to run as root), then pg_ctl start/stop."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="denocap-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, *args: object) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True)

    def start(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.folder / "data", "-l", self.folder / "log", "-w", "start",
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off")

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.folder / "data", "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"),
                        "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


def _until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)
