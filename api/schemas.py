"""Request and response models of the HTTP API (distinct from the ORM tables). No FastAPI here: the Python
client (core/client.py) reads responses into these same models."""
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from core.tables import ItemState

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    data: list[T]
    count: int


class ResultOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    width: int
    height: int
    sigma_estimate: float
    psnr_noisy: float | None
    ssim_noisy: float | None
    psnr: float | None
    ssim: float | None
    brisque_noisy: float | None
    brisque: float | None
    caption: str
    caption_noisy: str
    denoiser_version: str
    captioner_version: str
    timings: dict[str, float]
    notes: list[str] = []  # what the user should know of how the file was read or denoised


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    batch_id: str
    position: int
    filename: str
    state: ItemState
    error: str | None
    deliveries: int
    has_reference: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: ResultOut | None
    upload_id: str | None = None  # a multi-page file's later page: the item of its first page, which stands for the file
    links: dict[str, str] = {}


class BatchOut(BaseModel):
    id: str
    created_at: datetime
    options: dict
    total: int
    counts: dict[ItemState, int]
    progress: float  # finished (done or failed) / total
    sealed: bool = True  # False: an open batch, taking more files
    finished: bool  # sealed, and every item done or failed


class AppendedOut(BaseModel):
    filename: str  # as sent
    duplicate: bool  # the batch held this content already; `item` is the earlier item
    item: ItemOut


class AppendOut(BaseModel):
    batch: BatchOut
    files: list[AppendedOut]  # one per file sent, in order


class SubmitOut(BatchOut):
    items: list[ItemOut]


class CaptionOut(BaseModel):
    item_id: str
    batch_id: str
    filename: str
    caption: str
    caption_noisy: str
    sigma_estimate: float
    psnr: float | None
    ssim: float | None
    psnr_noisy: float | None
    brisque: float | None
    denoiser_version: str
    captioner_version: str
    notes: list[str] = []  # as the item's: only a file's first page was processed


class Health(BaseModel):
    status: str
    database: bool


def spreadsheet_safe(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row that a spreadsheet shows as text: a list (an item's notes) is one cell, joined by "; " (no note has
    a semicolon); a string cell that would start a formula (=, +, -, @, tab, CR; file names and captions come from
    uploaders) gets a leading apostrophe, as OWASP advises against CSV injection."""
    cells = {k: "; ".join(v) if isinstance(v, list) else v for k, v in row.items()}
    return {k: f"'{v}" if isinstance(v, str) and v.startswith(("=", "+", "-", "@", "\t", "\r")) else v
            for k, v in cells.items()}
