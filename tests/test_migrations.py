"""Alembic makes the schema (PostgreSQL and SQLite), matches core/tables.py, and downgrades to empty."""
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from core.db import downgrade, make_engine, migrate
from core.tables import Base


def check_round_trip(url: str) -> None:
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert {"batches", "items", "results"} <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"migrations and core/tables.py differ: {diff}"
    downgrade(url)
    with engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    migrate(url)  # and up again, e.g. the enum type was dropped on the way down
    engine.dispose()


def test_postgres_upgrade_downgrade(postgres_url: str) -> None:
    check_round_trip(postgres_url)


def test_sqlite_upgrade_downgrade(tmp_path: Path) -> None:
    check_round_trip(f"sqlite:///{tmp_path / 'db.sqlite'}")


def test_batches_made_before_tenants_belong_to_the_local_tenant(postgres_url: str) -> None:
    downgrade(postgres_url)
    migrate(postgres_url, "0002")
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, created_at, options, denoiser, captioner) "
                          "VALUES ('old', now(), '{}', 'ffdnet', 'attention')"))
    migrate(postgres_url)
    with engine.connect() as conn:
        owner = conn.execute(text("SELECT t.name FROM batches b JOIN tenants t ON t.id = b.tenant_id "
                                  "WHERE b.id = 'old'")).scalar_one()
    engine.dispose()
    assert owner == "local"


def test_caption_search_can_use_the_trigram_index(postgres_url: str) -> None:
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # an empty table: ask whether the index *can* serve it
        plan = conn.execute(text("EXPLAIN SELECT item_id FROM results WHERE caption ILIKE '%dog%'")).scalars().all()
    engine.dispose()
    assert any("ix_results_caption_trgm" in line for line in plan), plan


def test_recent_results_are_read_through_an_index(postgres_url: str) -> None:
    """/metrics reads the last minutes' stage timings at every scrape, and exports page by (created_at, item_id):
    neither may scan every result ever stored."""
    migrate(postgres_url)
    with make_engine(postgres_url).connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # the table is small here; ask what the plan can use
        plans = [" ".join(r[0] for r in conn.execute(text(f"EXPLAIN {query}"))) for query in (
            "SELECT timings FROM results WHERE created_at > now() - interval '5 minutes' LIMIT 10000",
            "SELECT item_id FROM results WHERE (created_at, item_id) > (now(), 'x') ORDER BY created_at, item_id LIMIT 5")]
    assert all("ix_results_created_at_item_id" in plan for plan in plans), plans


def test_sqlite_keeps_every_row_through_upgrades_and_downgrades(tmp_path: Path) -> None:
    """SQLite's migrations rebuild tables (copy, drop, rename); the drop must not cascade to the rows that refer to
    the table: an old local database kept its batch and lost every item and result."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url, "0002")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, created_at, options, denoiser, captioner) "
                          "VALUES ('b', '2026-01-01', '{}', 'ffdnet', 'attention')"))
        conn.execute(text("INSERT INTO items (id, batch_id, position, filename, state, deliveries, has_reference, "
                          "created_at) VALUES ('i', 'b', 0, 'a.png', 'done', 1, 0, '2026-01-01')"))
        conn.execute(text("INSERT INTO results (item_id, width, height, sigma_estimate, caption, caption_noisy, "
                          "denoiser_version, captioner_version, denoised_key, noisy_key, timings, created_at) "
                          "VALUES ('i', 1, 1, 1, 'c', 'c', 'd', 'c', 'k', 'k', '{}', '2026-01-01')"))

    def rows() -> list[int]:
        with engine.connect() as conn:
            return [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("batches", "items", "results")]
    migrate(url)
    assert rows() == [1, 1, 1]
    downgrade(url, "0002")
    assert rows() == [1, 1, 1]
    engine.dispose()


def test_sqlite_checks_its_foreign_keys_after_a_migration_and_only_then(tmp_path: Path) -> None:
    """With foreign keys off while tables are rebuilt, a row left referring to nothing is refused at the end of the
    migration; a start with nothing to migrate does not scan every table."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    orphan = ("INSERT INTO items (id, batch_id, position, filename, state, deliveries, has_reference, created_at) "
              "VALUES ('i', 'gone', 0, 'a.png', 'done', 1, 0, '2026-01-01')")
    migrate(url)
    with sqlite3.connect(tmp_path / "db.sqlite") as db:  # foreign keys off: sqlite3's default
        db.execute(orphan)
    migrate(url)  # nothing to migrate: no check
    with pytest.raises(RuntimeError, match="rows that refer to none"):
        downgrade(url, "0010")
    with sqlite3.connect(tmp_path / "db.sqlite") as db:  # all undone, not left half-way with the check passed by
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [("0011",)]
        assert "deletions" in {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
