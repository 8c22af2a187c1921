"""SQLAlchemy 2 tables: a batch holds items; an item has at most one result. The item row is the truth."""
import enum
import uuid
from datetime import UTC, datetime

from sqlalchemy import JSON, DateTime, Dialect, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def _now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Moment(TypeDecorator[datetime]):
    """A time with its time zone, read back with one: SQLite keeps none, and its rows came back naive (an API
    answer's times had no "Z" once read again), so they are read as the UTC they were written in; PostgreSQL's
    come back in the session's time zone, as before."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    pass


class ItemState(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now)


class ApiKey(Base):
    """A key is shown once; only the SHA-256 of its secret part is kept (keys are random, 256 bits)."""
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(Moment)
    tenant: Mapped[Tenant] = relationship()


class GallerySession(Base):
    """A signed-in browser: the cookie holds `<id>.<secret>`; only the SHA-256 of the secret is kept. It lives while
    the key it was opened with does (sessions opened before keys were recorded have none, and are over)."""
    __tablename__ = "gallery_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    api_key_id: Mapped[str | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE",
                                                              name="fk_gallery_sessions_api_key"))
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now)
    expires_at: Mapped[datetime] = mapped_column(Moment)
    revoked_at: Mapped[datetime | None] = mapped_column(Moment)
    api_key: Mapped[ApiKey | None] = relationship()


class Batch(Base):
    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_batches_tenant_idempotency_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE", name="fk_batches_tenant"),
                                           index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_digest: Mapped[str | None] = mapped_column(String(64))  # same key, other body: refused
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now, index=True)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    denoiser: Mapped[str] = mapped_column(String(64))
    captioner: Mapped[str] = mapped_column(String(64))
    # None while files may still be appended (an open batch); an open batch is never finished
    sealed_at: Mapped[datetime | None] = mapped_column(Moment)
    items: Mapped[list["Item"]] = relationship(back_populates="batch", order_by="Item.position")


class Item(Base):
    __tablename__ = "items"
    # not unique: one POST /batches may hold the same file twice; appends look the digest up under a batch lock
    __table_args__ = (Index("ix_items_batch_id_digest", "batch_id", "digest"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    batch_id: Mapped[str] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))  # shown to the user, never used as a path
    state: Mapped[ItemState] = mapped_column(Enum(ItemState, name="item_state"), default=ItemState.queued, index=True)
    error: Mapped[str | None] = mapped_column(Text)
    failure: Mapped[str | None] = mapped_column(String(32))  # the kind of error, for metrics
    deliveries: Mapped[int] = mapped_column(Integer, default=0)
    runner: Mapped[str | None] = mapped_column(String(128))  # host:pid of the process that claimed it last
    has_reference: Mapped[bool] = mapped_column(default=False)
    digest: Mapped[str | None] = mapped_column(String(64))  # SHA-256 of the upload: an append sent twice is one item
    page: Mapped[int | None] = mapped_column(Integer)  # a multi-page TIFF's page (imageio.full_pages' frame), or None
    upload_id: Mapped[str | None] = mapped_column(String(32))  # the item whose stored upload this page is read from
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now)
    enqueued_at: Mapped[datetime | None] = mapped_column(Moment)
    started_at: Mapped[datetime | None] = mapped_column(Moment)
    finished_at: Mapped[datetime | None] = mapped_column(Moment)
    batch: Mapped[Batch] = relationship(back_populates="items")
    result: Mapped["Result | None"] = relationship(back_populates="item", uselist=False)


def trigram_index(column: str) -> Index:
    """Caption search is ILIKE '%word%': a trigram GIN index on PostgreSQL (pg_trgm), a plain one on SQLite."""
    return Index(f"ix_results_{column}_trgm", column, postgresql_using="gin", postgresql_ops={column: "gin_trgm_ops"})


class Result(Base):
    __tablename__ = "results"
    # (created_at, item_id): the export's keyset order and /metrics' recent timings, without a scan of every result
    __table_args__ = (trigram_index("caption"), trigram_index("caption_noisy"),
                      Index("ix_results_created_at_item_id", "created_at", "item_id"))
    item_id: Mapped[str] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sigma_estimate: Mapped[float] = mapped_column(Float)
    psnr_noisy: Mapped[float | None] = mapped_column(Float)
    ssim_noisy: Mapped[float | None] = mapped_column(Float)
    psnr: Mapped[float | None] = mapped_column(Float, index=True)
    ssim: Mapped[float | None] = mapped_column(Float)
    brisque_noisy: Mapped[float | None] = mapped_column(Float)
    brisque: Mapped[float | None] = mapped_column(Float)
    caption: Mapped[str] = mapped_column(Text)
    caption_noisy: Mapped[str] = mapped_column(Text)
    denoiser_version: Mapped[str] = mapped_column(String(128))
    captioner_version: Mapped[str] = mapped_column(String(128))
    denoised_key: Mapped[str] = mapped_column(String(255))
    noisy_key: Mapped[str] = mapped_column(String(255))
    timings: Mapped[dict] = mapped_column(JSON, default=dict)
    notes: Mapped[list[str]] = mapped_column(JSON, default=list)  # what the user is told (only a file's first page)
    created_at: Mapped[datetime] = mapped_column(Moment, default=_now)
    item: Mapped[Item] = relationship(back_populates="result")


class Deletion(Base):
    """A deleted item whose stored files storage has not deleted yet (core.submit.sweep: at once after the deletion
    commits, and by the reconciler when storage failed then)."""
    __tablename__ = "deletions"
    item_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    denoiser_version: Mapped[str | None] = mapped_column(String(128))  # its result's, which names its images' keys
    ran: Mapped[bool] = mapped_column(default=False)  # with no result: a run may have written images before it failed
    due_at: Mapped[datetime] = mapped_column(Moment, default=_now, index=True)  # a sweep's next try
