"""Logging for the server and the workers: plain text, or one JSON object a line carrying batch and item ids."""
import logging

from pythonjsonlogger.json import JsonFormatter

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT)


def setup(log_format: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def use_format(logger: logging.Logger, log_format: str) -> None:
    """Celery installs its own handlers; this gives them our format."""
    for handler in logger.handlers:
        handler.setFormatter(formatter(log_format))
