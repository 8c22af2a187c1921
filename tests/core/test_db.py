"""The embedded database keeps the transactions the PostgreSQL code relies on: SQLite ignores FOR UPDATE, so a
transaction that read a row must not write over another's commit since."""
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from core.db import STATEMENT_TIMEOUT_S, make_engine, migrate, session_factory
from core.tables import Tenant


def test_a_write_after_another_commit_fails_instead_of_using_a_stale_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as s:
        s.add(Tenant(name="t"))
    with sessions() as first, pytest.raises(OperationalError, match="locked"):
        name = first.scalar(select(Tenant.name))  # read: a batch's last position, say
        with sessions.begin() as second:  # another request commits in between
            second.execute(update(Tenant).values(name="changed"))
        first.execute(update(Tenant).values(name=f"{name}!"))  # a write from what it read
        first.commit()
    with sessions() as s:
        assert s.scalar(select(Tenant.name)) == "changed"


def test_a_postgresql_statement_ends_at_the_timeout_and_frees_its_connection(postgres_url: str) -> None:
    """A search that no index helps must not hold one of the pool's connections for minutes."""
    engine = make_engine(postgres_url, statement_timeout_s=0.2)
    with engine.connect() as conn, pytest.raises(OperationalError, match="statement timeout"):
        conn.execute(text("SELECT pg_sleep(3)"))
    with engine.connect() as conn:
        assert conn.scalar(text("SHOW statement_timeout")) == "200ms"
    with make_engine(postgres_url).connect() as conn:
        assert conn.scalar(text("SHOW statement_timeout")) == f"{STATEMENT_TIMEOUT_S}s"
    with make_engine(postgres_url, statement_timeout_s=None).connect() as conn:  # migrations
        assert conn.scalar(text("SHOW statement_timeout")) == "0"
