"""Engine, session factory and migrations (Alembic is the only way the schema is made)."""
import os
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import sessionmaker

ROOT = Path(__file__).resolve().parent.parent


STATEMENT_TIMEOUT_S = 30  # PostgreSQL: a search no index helps, or a lock waited on, ends here and frees its connection


def make_engine(url: str, statement_timeout_s: float | None = STATEMENT_TIMEOUT_S) -> Engine:
    """statement_timeout_s: None for none (migrations, which may build an index over a large table)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=10,
                         connect_args={"connect_timeout": 10,  # an unreachable host: a 503 in seconds, not minutes
                                       **_options(url, statement_timeout_s)})


def _options(url: str, statement_timeout_s: float | None) -> dict[str, str]:
    """libpq's `options` with the timeout added to the URL's own (`?options=...`) or else PGOPTIONS, which an
    explicit value would otherwise replace."""
    if not statement_timeout_s:
        return {}
    own = make_url(url).query.get("options") or os.environ.get("PGOPTIONS", "")
    own = " ".join(own) if isinstance(own, tuple) else own
    return {"options": f"{own} -c statement_timeout={max(1, round(statement_timeout_s * 1000))}".strip()}


def _sqlite_pragmas(conn, _record) -> None:  # type: ignore[no-untyped-def]
    conn.isolation_level = None  # the driver would begin only before the first write, leaving reads outside
    cur = conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn) -> None:  # type: ignore[no-untyped-def]
    """SQLite has no row locks (FOR UPDATE is ignored), but a transaction that reads first sees one snapshot, and
    its first write fails (database is locked: a 503 from the API, a retry in the worker) if another committed
    since: what it read (a batch's last position, its seal) cannot have changed when it writes."""
    conn.exec_driver_sql("BEGIN")


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


@lru_cache
def sessions_for(url: str) -> sessionmaker:
    """One engine per process and URL (a forked worker process clears the cache: the parent's is not its own)."""
    return session_factory(make_engine(url))


class MigrationsMissing(RuntimeError):
    pass


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config
    if not (ROOT / "alembic" / "env.py").is_file():  # a wheel installs the code without them
        raise MigrationsMissing(f"the migrations (alembic/) are not beside the code in {ROOT}: install from the "
                                "source tree with pip install -e")
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "alembic"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    from alembic import command
    if url.startswith("sqlite"):
        make_engine(url).dispose()  # creates the folder
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    from alembic import command
    command.downgrade(alembic_config(url), revision)
