"""Image files by key: a local folder (the embedded default) or S3-compatible object storage. Keys are made
from ids by the callers, never from user file names, and no code path assumes a shared filesystem."""
import io
import os
import re
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

from core.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, file: BinaryIO) -> None: ...  # from the file's position to its end, streamed
    def get(self, key: str) -> bytes: ...
    def find(self, key: str) -> bytes | None: ...  # get, or None when there is no such object


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"bad storage key {key!r}")
    return key


def input_key(item_id: str) -> str:
    return f"items/{item_id}/input"


def reference_key(item_id: str) -> str:
    return f"items/{item_id}/reference"


def results_prefix(item_id: str, denoiser_version: str) -> str:
    """Where an item's result images live: a rerun with the same model overwrites the same keys."""
    return f"results/{item_id}/{denoiser_version.replace('@', '-').replace('+', '-')}"


class LocalStorage:
    """A folder; writes go to a temporary file that is renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        self.put_file(key, io.BytesIO(data))

    def put_file(self, key: str, file: BinaryIO) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with tmp.open("wb") as out:
            shutil.copyfileobj(file, out)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def find(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except FileNotFoundError:
            return None


class S3Storage:
    """A bucket on any S3-compatible server (AWS, MinIO, rclone serve s3); made on first use if missing."""

    def __init__(self, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError
        self.bucket = bucket
        self.client = boto3.client(
            "s3", endpoint_url=endpoint or None, aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None, region_name=region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 8, "mode": "standard"}))
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as e:
            if not _missing(e):
                raise
            self.client.create_bucket(Bucket=bucket)

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)

    def put_file(self, key: str, file: BinaryIO) -> None:
        self.client.upload_fileobj(file, self.bucket, check_key(key))  # multipart upload for large files

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()

    def find(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError
        try:
            return self.get(key)
        except ClientError as e:
            if _missing(e):
                return None
            raise


def _missing(error: Exception) -> bool:
    return error.response["Error"]["Code"] in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")  # type: ignore[attr-defined]


def make_storage(settings: Settings) -> Storage:
    if settings.storage == "s3":
        return _s3(settings.s3_endpoint, settings.s3_bucket, settings.s3_access_key, settings.s3_secret_key,
                   settings.s3_region)
    return LocalStorage(settings.files)


@lru_cache(maxsize=4)
def _s3(endpoint: str, bucket: str, access_key: str, secret_key: str, region: str) -> S3Storage:
    """One client per process and configuration (boto3 clients are thread-safe)."""
    return S3Storage(endpoint, bucket, access_key, secret_key, region)
