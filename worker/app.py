"""The Celery app: Redis broker, late acks, one task at a time per process, time limits from settings. The API
sends tasks by name through `enqueue`, so it never imports the task module (nor torch)."""
from celery import Celery

from core.config import QUEUE, get_settings

PROCESS = "denocap.process_items"
RECONCILE = "denocap.reconcile"
EXPIRE = "denocap.expire"


def make_celery() -> Celery:
    s = get_settings()
    app = Celery("denocap", broker=s.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # safe: claim() counts deliveries and fails a poison item
        worker_prefetch_multiplier=1,
        task_soft_time_limit=s.task_soft_time_limit,
        task_time_limit=s.task_time_limit,
        broker_transport_options={"visibility_timeout": s.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_max_memory_per_child=4_000_000,  # KiB: a leaking child is replaced between tasks
        task_default_queue=QUEUE,
        beat_schedule={"reconcile": {"task": RECONCILE, "schedule": float(s.reconcile_every)}}
        | ({"expire": {"task": EXPIRE, "schedule": float(s.expire_every), "args": (s.retention_days,),  # beat's own
                       "options": {"expires": float(s.expire_every)}}} if s.retention_days else {}),
    )
    return app


app = make_celery()


def enqueue(item_ids: list[str], micro_batch: int, countdown: float | None = None) -> None:
    """One message per `micro_batch` items; the caller marks them enqueued (core.queue) once sent."""
    for start in range(0, len(item_ids), micro_batch):
        app.send_task(PROCESS, args=[item_ids[start:start + micro_batch]], countdown=countdown)
