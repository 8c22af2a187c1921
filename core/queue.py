"""What the queue should hold, from the rows (the broker is not a database): items sent, items to send again."""
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.tables import Item, ItemState


def mark_enqueued(session: Session, item_ids: list[str]) -> None:
    """Locks the rows in id order first, as a deletion does: in scan order the two could deadlock."""
    session.execute(select(Item.id).where(Item.id.in_(item_ids)).order_by(Item.id).with_for_update())
    session.execute(update(Item).where(Item.id.in_(item_ids)).values(enqueued_at=datetime.now(UTC)))


def due_for_requeue(session: Session, requeue_after: int, lease: int) -> list[str]:
    """Items whose message may be lost: queued with no message for `requeue_after` seconds (the broker was
    flushed or restarted empty), or running past their lease (the worker died and its message is gone)."""
    now = datetime.now(UTC)
    stale_queue = and_(Item.state == ItemState.queued,
                       or_(Item.enqueued_at.is_(None), Item.enqueued_at < now - timedelta(seconds=requeue_after)))
    expired = and_(Item.state == ItemState.running, Item.started_at < now - timedelta(seconds=lease))
    return list(session.scalars(select(Item.id).where(or_(stale_queue, expired)).order_by(Item.created_at)))
