"""The Celery app: Redis broker, late acks, one task at a time per process, time limits from settings."""
from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, worker_process_init

from core import logs
from core.config import QUEUE, get_settings


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
        beat_schedule={"reconcile": {"task": "denocap.reconcile", "schedule": float(s.reconcile_every)}},
    )
    return app


app = make_celery()


@worker_process_init.connect
def _after_fork(**_: object) -> None:
    """Engines inherited from the parent must not be shared with the child; models load lazily later."""
    from worker import tasks
    tasks.reset_process_state()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: object, **_: object) -> None:
    logs.use_format(logger, get_settings().log_format)  # type: ignore[arg-type]
