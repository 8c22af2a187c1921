"""All settings, read from the environment (prefix DENOCAP_) in one place."""
import contextlib
import resource
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.names import ENSEMBLES

QUEUE = "denocap"  # the Celery queue the workers consume and /metrics measures
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"


Positive = Annotated[int, Field(gt=0)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DENOCAP_", env_file=".env", extra="ignore")

    data_dir: Path = Path("denocap-data")
    database_url: str = ""  # empty: SQLite file under data_dir
    storage: Literal["local", "s3"] = "local"
    storage_root: Path | None = None  # local storage; None: data_dir/files
    s3_endpoint: str = ""  # e.g. http://minio:9000; empty: AWS
    s3_bucket: str = "denocap"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    broker_url: str = "redis://127.0.0.1:6379/0"
    shared_data: Path = Path("../shared/data")  # training, evaluation and benchmarks only

    weights_dir: Path = WEIGHTS_DIR
    blip_weights: Path | None = None  # a local transformers folder for the opt-in `blip` captioner
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # auto | cpu | cuda | cuda:N
    torch_threads: int = Field(0, ge=0)  # 0: torch's default
    gpu_processes: Positive = 1  # worker processes sharing the GPU (denocap worker sets it): each batches tiles in its share
    micro_batch: Positive = 4  # items per task message; claimed and run one at a time
    tile_size: Positive = 512
    tile_overlap: int = Field(32, ge=0)
    denoise_ensemble: int = 1  # 1, 2, 4 or 8: geometric self-ensemble, PSNR for time (see the model card)
    precision: Literal["auto", "float32"] = "auto"  # auto: float16 on a GPU, bfloat16 on a CPU that has it

    max_file_bytes: Positive = 50 * 1024 * 1024
    max_pixels: Positive = 50_000_000
    max_side: Positive = 16384
    max_files_per_batch: Positive = 10_000
    max_request_bytes: Positive = 2 * 1024**3  # a whole upload request
    max_batches_in_flight: Positive = 20  # unfinished batches per tenant
    max_batch_items: Positive = 1_000_000  # files in one batch, appended over any number of requests

    # addresses whose X-Forwarded-Proto/-For `denocap serve` believes: a TLS proxy on another host goes here (or
    # "*" behind a private network), so the gallery sees https, its cookie is Secure and its origin check passes
    forwarded_allow_ips: str = "127.0.0.1"
    url: str = "http://127.0.0.1:8000"  # the API that `denocap submit/status/results` talk to
    api_key: str = ""  # their key (DENOCAP_API_KEY)

    task_soft_time_limit: Positive = 600
    task_time_limit: Positive = 660
    visibility_timeout: Positive = 3600
    max_deliveries: Positive = 3
    requeue_after: int = Field(1800, ge=0)  # a queued item with no run for this long gets another message
    reconcile_every: Positive = 60  # seconds between reconciler runs (worker started with --beat)
    retention_days: int = Field(0, ge=0, le=36500)  # finished batches sealed this long ago are deleted with their files (0: kept)
    expire_every: int = Field(3600, gt=0)  # seconds between those deletions by a worker started with --beat
    database_retry_seconds: int = Field(300, ge=0)  # a worker keeps a finished result this long while the database is down
    log_format: Literal["text", "json"] = "text"  # text, or json (one object a line, with batch and item ids)

    @field_validator("denoise_ensemble")
    @classmethod
    def _ensemble(cls, value: int) -> int:
        if value not in ENSEMBLES:
            raise ValueError(f"must be {', '.join(map(str, ENSEMBLES[:-1]))} or {ENSEMBLES[-1]}")
        return value

    @field_validator("data_dir", "storage_root", "weights_dir", "blip_weights", "shared_data", mode="before")
    @classmethod
    def _no_empty_path(cls, value: object) -> object:
        if value == "":  # Path("") is the working folder: files would land wherever the process was started
            raise ValueError("must not be empty (unset it for the default)")
        return value

    @model_validator(mode="after")
    def _defaults_under_data_dir(self) -> "Settings":
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'denocap.db').resolve()}"
        for scheme in ("postgresql://", "postgres://"):  # libpq's forms: the driver installed is psycopg 3
            if self.database_url.startswith(scheme):
                self.database_url = "postgresql+psycopg://" + self.database_url.removeprefix(scheme)
        if self.storage_root is None:
            self.storage_root = self.data_dir / "files"
        if not self.task_soft_time_limit < self.task_time_limit < self.visibility_timeout:
            raise ValueError("DENOCAP_TASK_SOFT_TIME_LIMIT < DENOCAP_TASK_TIME_LIMIT < DENOCAP_VISIBILITY_TIMEOUT "
                             "is needed")
        if self.tile_size <= 2 * self.tile_overlap:
            raise ValueError("DENOCAP_TILE_SIZE must exceed twice DENOCAP_TILE_OVERLAP")
        return self

    @property
    def lease(self) -> int:
        """A running item whose run started longer ago than this is taken to be lost."""
        return self.task_time_limit + 30

    @property
    def files(self) -> Path:
        assert self.storage_root is not None
        return self.storage_root


def unknown_settings(environ: Mapping[str, str], env_file: Path = Path(".env")) -> list[str]:
    """The DENOCAP_ variables, in the environment or the .env file, that name no setting (a misspelt one), but for
    the tests' own DENOCAP_TEST_ ones. Any case, as the settings are read."""
    from dotenv import dotenv_values
    names = [*environ, *(dotenv_values(env_file) if env_file.is_file() else {})]
    known = {f"DENOCAP_{name.upper()}" for name in Settings.model_fields}
    return sorted({k for k in names if k.upper().startswith("DENOCAP_") and k.upper() not in known
                   and not k.upper().startswith("DENOCAP_TEST_")})


@lru_cache
def get_settings() -> Settings:
    return Settings()


@lru_cache
def open_files() -> int:
    """How many files this process may hold open, its soft limit raised to the hard one first: an upload holds a
    file a part, on the server's side (Starlette spools parts over 1 MiB) and on the client's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft if soft != resource.RLIM_INFINITY else 1 << 20
