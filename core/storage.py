"""Image files by key: a local folder (the embedded default) or S3-compatible object storage. Keys are made
from ids by the callers, never from user file names, and no code path assumes a shared filesystem."""
import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Protocol

from core.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class StorageUnavailable(OSError):  # an OSError, as a full disk is for a folder
    """The object storage cannot be reached or refuses the request (down, wrong credentials): no item's fault."""


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, file: BinaryIO) -> None: ...  # from the file's position to its end, streamed
    def get(self, key: str) -> bytes: ...
    def find(self, key: str) -> bytes | None: ...  # get, or None when there is no such object
    def delete(self, keys: list[str]) -> None: ...  # those there; a key that is not is no error
    def delete_under(self, folder: str) -> None: ...  # every key that begins with folder + "/"


def check_key(key: str) -> str:
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"bad storage key {key!r}")
    return key


def input_key(item_id: str) -> str:
    return f"items/{item_id}/input"


def reference_key(item_id: str) -> str:
    return f"items/{item_id}/reference"


def results_folder(item_id: str) -> str:
    return f"results/{item_id}"


def results_prefix(item_id: str, denoiser_version: str) -> str:
    """Where an item's result images live: a rerun with the same model overwrites the same keys."""
    return f"{results_folder(item_id)}/{denoiser_version.replace('@', '-').replace('+', '-')}"


THUMB_SIZE = 320  # pixels, the longer side of the gallery's thumbnails


def thumbnail_key(item_id: str, denoiser_version: str, which: str) -> str:
    """A thumbnail, made when first asked for."""
    return f"thumbs/{results_prefix(item_id, denoiser_version).removeprefix('results/')}/{which}-{THUMB_SIZE}.jpg"


def item_keys(item_id: str, denoiser_version: str | None) -> list[str]:
    """Every key an item may have: its upload and reference, and with a result of that model, its images (the
    noisy one too when the API made it from the upload) and their thumbnails."""
    keys = [input_key(item_id), reference_key(item_id)]
    if denoiser_version is not None:
        prefix = results_prefix(item_id, denoiser_version)
        keys += [f"{prefix}/denoised.png", f"{prefix}/noisy.png",
                 *(thumbnail_key(item_id, denoiser_version, which) for which in ("noisy", "denoised"))]
    return keys


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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                out = tmp.open("wb")
                break
            except FileNotFoundError:  # a deletion pruned the empty folder between the two: make it again
                if attempt == 2:
                    raise
        with out:
            shutil.copyfileobj(file, out)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def find(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except FileNotFoundError:
            return None

    def delete(self, keys: list[str]) -> None:
        """Also the folders the files leave empty, up to the root."""
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            self._prune(path.parent)

    def delete_under(self, folder: str) -> None:
        path = self._path(folder)
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            raise OSError(f"could not delete {folder}")
        self._prune(path.parent)

    def _prune(self, folder: Path) -> None:
        """Removes the folder and those above it while they are empty, up to the root."""
        for here in (folder, *folder.parents):
            if here == self.root:
                return
            try:
                here.rmdir()
            except OSError:  # not empty, or gone
                return


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
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 8, "mode": "standard"},
                          # checksums only where the API requires them, as before boto3 1.36: older MinIO and Ceph
                          # refuse the CRC32 trailers it now puts on every upload
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))
        with _unavailable():
            try:
                self.client.head_bucket(Bucket=bucket)
            except ClientError as e:
                if not _missing(e):
                    raise
                self.client.create_bucket(Bucket=bucket)

    def put(self, key: str, data: bytes) -> None:
        with _unavailable():
            self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)

    def put_file(self, key: str, file: BinaryIO) -> None:
        with _unavailable():
            self.client.upload_fileobj(file, self.bucket, check_key(key))  # multipart upload for large files

    def get(self, key: str) -> bytes:
        """FileNotFoundError when there is no such object, as for a folder."""
        from botocore.exceptions import ClientError
        with _unavailable():
            try:
                return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
            except ClientError as e:
                if _missing(e) and e.response["Error"]["Code"] != "NoSuchBucket":  # no bucket: storage is gone
                    raise FileNotFoundError(f"no object {key}") from None
                raise

    def find(self, key: str) -> bytes | None:
        try:
            return self.get(key)
        except FileNotFoundError:
            return None

    def delete(self, keys: list[str]) -> None:
        """OSError when the server cannot be reached or keeps an object."""
        from botocore.exceptions import ClientError
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1,000 keys
            chunk = [{"Key": check_key(k)} for k in keys[start:start + 1000]]
            with _unavailable():
                try:
                    answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
                except ClientError as e:
                    if e.response["Error"]["Code"] != "MissingContentMD5":
                        raise
                    # a server that wants the MD5 boto3 no longer sends (since 1.36; older MinIO, Ceph): key by key
                    answer = {}
                    for o in chunk:
                        self.client.delete_object(Bucket=self.bucket, Key=o["Key"])
            if errors := answer.get("Errors"):
                raise OSError(f"object storage kept {len(errors)} objects, {errors[0]['Key']}: {errors[0]['Message']}")

    def delete_under(self, folder: str) -> None:
        with _unavailable():
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{folder}/")
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        self.delete(keys)


@contextmanager
def _unavailable() -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        yield
    except (BotoCoreError, ClientError) as e:
        raise StorageUnavailable(f"object storage: {e}") from e


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
