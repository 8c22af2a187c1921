"""Read-side queries shared by the API and the CLI; every one is scoped to a tenant."""
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, String, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.tables import Batch, Item, ItemState, Result


def tenant_batch(session: Session, tenant_id: str, batch_id: str) -> Batch | None:
    return session.scalar(select(Batch).where(Batch.id == batch_id, Batch.tenant_id == tenant_id))


def tenant_item(session: Session, tenant_id: str, item_id: str) -> Item | None:
    return session.scalar(select(Item).join(Batch).where(Item.id == item_id, Batch.tenant_id == tenant_id))


def batch_counts(session: Session, batch_ids: list[str]) -> dict[str, dict[ItemState, int]]:
    """Items per state of each batch, in one query for all of them."""
    counts = {b: dict.fromkeys(ItemState, 0) for b in batch_ids}
    if batch_ids:
        rows = session.execute(select(Item.batch_id, Item.state, func.count()).where(Item.batch_id.in_(batch_ids))
                               .group_by(Item.batch_id, Item.state))
        for batch_id, state, n in rows:
            counts[batch_id][state] = n
    return counts


def progress(counts: dict[ItemState, int]) -> tuple[int, float, bool]:
    total = sum(counts.values())
    finished = counts[ItemState.done] + counts[ItemState.failed]
    return total, (finished / total if total else 1.0), finished == total


@dataclass(frozen=True)
class CaptionFilter:
    q: str | None = None  # every word must occur in the caption as a word or its plural (case-insensitive)
    batch_id: str | None = None
    min_psnr: float | None = None
    max_psnr: float | None = None
    min_ssim: float | None = None
    max_ssim: float | None = None
    min_sigma: float | None = None
    max_sigma: float | None = None
    max_brisque: float | None = None


def _has_word(caption: InstrumentedAttribute[str], word: str) -> ColumnElement[bool]:
    """The word as a word of the caption (between spaces or punctuation), or its plural (cat finds cats, not
    catch; a plural typed finds itself): the plain match first, which the trigram index serves, then the word's
    edges, the typed word's punctuation read as the caption's is (t-shirt, dog's)."""
    spaced: ColumnElement[str] = literal(" ") + caption + literal(" ")
    edged = word
    for mark in WORD_EDGES:
        spaced, edged = func.replace(spaced, mark, " "), edged.replace(mark, " ")
    plain = caption.ilike(f"%{_escaped(word)}%", escape="\\")
    if not (edged := " ".join(edged.split())):  # punctuation alone
        return plain
    return and_(plain, or_(*(spaced.ilike(f"% {_escaped(edged)}{end} %", escape="\\") for end in ("", "s", "es"))))


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


WORD_EDGES = ",.;:!?\"'()-/"  # a BLIP caption's punctuation; ImageNet's black-and-tan


def caption_query(tenant_id: str, f: CaptionFilter) -> Select:
    stmt = select(Result, Item).join(Item, Item.id == Result.item_id).join(Batch, Batch.id == Item.batch_id)
    conds = [Batch.tenant_id == tenant_id]
    for word in (f.q or "").split():
        conds.append(or_(_has_word(Result.caption, word), _has_word(Result.caption_noisy, word)))
    bounds = [(Result.psnr, f.min_psnr, f.max_psnr), (Result.ssim, f.min_ssim, f.max_ssim),
              (Result.sigma_estimate, f.min_sigma, f.max_sigma), (Result.brisque, None, f.max_brisque)]
    for column, low, high in bounds:
        if low is not None:
            conds.append(column >= low)
        if high is not None:
            conds.append(column <= high)
    if f.batch_id:
        conds.append(Item.batch_id == f.batch_id)
    return stmt.where(and_(*conds))


def search_captions(session: Session, tenant_id: str, f: CaptionFilter, limit: int,
                    offset: int) -> tuple[list[tuple[Result, Item]], int]:
    stmt = caption_query(tenant_id, f)
    count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Item.created_at, Item.position, Item.id).limit(limit).offset(offset)).all()
    return [(r, i) for r, i in rows], count


def caption_page(session: Session, tenant_id: str, f: CaptionFilter, limit: int,
                 after: tuple[datetime, str] | None) -> list[tuple[Result, Item]]:
    """The next `limit` captions after (created_at, item_id) of the last one seen: keyset paging for exports."""
    stmt = caption_query(tenant_id, f)
    if after is not None:
        stmt = stmt.where(tuple_(Result.created_at, Result.item_id) > after)
    rows = session.execute(stmt.order_by(Result.created_at, Result.item_id).limit(limit)).all()
    return [(r, i) for r, i in rows]


def batch_items(session: Session, batch_id: str, state: ItemState | None, limit: int,
                offset: int, noted: bool = False) -> tuple[list[Item], int]:
    """noted: only items whose result has a note (only a file's first page was processed, and the like)."""
    stmt = select(Item).where(Item.batch_id == batch_id)
    if state is not None:
        stmt = stmt.where(Item.state == state)
    if noted:  # the JSON as stored: '[]' when there is none
        stmt = stmt.join(Result, Result.item_id == Item.id).where(cast(Result.notes, String) != "[]")
    count = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return list(session.scalars(stmt.order_by(Item.position).limit(limit).offset(offset))), count


def list_batches(session: Session, tenant_id: str, limit: int, offset: int,
                 ids: list[str] | None = None) -> tuple[list[Batch], int]:
    """Newest first (the id breaks ties, so pages neither repeat nor skip a batch); only `ids` when given."""
    mine = select(Batch).where(Batch.tenant_id == tenant_id)
    if ids is not None:
        mine = mine.where(Batch.id.in_(ids))
    count = session.scalar(select(func.count()).select_from(mine.subquery())) or 0
    rows = session.scalars(mine.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), count
