"""The embedded database keeps the transactions the PostgreSQL code relies on: SQLite ignores FOR UPDATE, so a
transaction that read a row must not write over another's commit since."""
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from core.db import make_engine, migrate, session_factory
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
