"""The embedded database keeps the transactions the PostgreSQL code relies on: SQLite ignores FOR UPDATE, so a
transaction that read a row must not write over another's commit since."""
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text, update
from sqlalchemy.exc import OperationalError

from core import queries
from core.db import STATEMENT_TIMEOUT_S, make_engine, migrate, session_factory
from core.tables import Batch, Item, ItemState, Result, Tenant


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
    for timeout, shown in ((0.2, "200ms"), (STATEMENT_TIMEOUT_S, f"{STATEMENT_TIMEOUT_S}s"), (None, "0")):  # None: migrations
        engine = make_engine(postgres_url, statement_timeout_s=timeout)
        with engine.connect() as conn:
            assert conn.scalar(text("SHOW statement_timeout")) == shown
        engine.dispose()


def test_the_timeout_keeps_the_users_own_postgresql_options(postgres_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def show(engine: Engine, name: str) -> str:
        with engine.connect() as conn:
            value = conn.scalar(text(f"SHOW {name}"))
        engine.dispose()
        return value
    in_url = make_engine(f"{postgres_url}?options=-csearch_path%3Dmine")
    assert show(in_url, "search_path") == "mine" and show(in_url, "statement_timeout") == f"{STATEMENT_TIMEOUT_S}s"
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=5s")
    assert show(make_engine(postgres_url), "lock_timeout") == "5s"
    assert show(make_engine(postgres_url, statement_timeout_s=None), "lock_timeout") == "5s"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_caption_search_finds_words_and_their_plurals_not_parts_of_words(database: str, tmp_path: Path,
                                                                         postgres_url: str) -> None:
    """"cat" found "a coffee to catch a frisbee" beside the cats; a word beside punctuation is a word, and a typed
    one with punctuation is read the same way."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if database == "sqlite" else postgres_url
    migrate(url)
    sessions = session_factory(make_engine(url))
    captions = ["a coffee to catch a frisbee", "two cats on a sofa", "a cat sits", "three buses", "100% _pure_ cat",
                "a dog, on grass", "a black-and-tan dog's toy", "a man in a t-shirt", "a new car"]
    with sessions.begin() as s:
        tenant = Tenant(name=f"search {database}")
        s.add(tenant)
        s.flush()
        batch = Batch(tenant_id=tenant.id, options={}, denoiser="d", captioner="c")
        s.add(batch)
        for n, caption in enumerate(captions):
            item = Item(batch=batch, position=n, filename=f"{n}.png", state=ItemState.done)
            item.result = Result(width=1, height=1, sigma_estimate=0, caption=caption, caption_noisy="",
                                 denoiser_version="d", captioner_version="c", denoised_key="k", noisy_key="k")
            s.add(item)
        s.flush()
        tenant_id = tenant.id

    def found(q: str) -> list[str]:
        with sessions() as s:
            rows, _ = queries.search_captions(s, tenant_id, queries.CaptionFilter(q), 10, 0)
        return sorted(r.caption for r, _ in rows)
    assert found("cat") == ["100% _pure_ cat", "a cat sits", "two cats on a sofa"] and found("cats") == [
        "two cats on a sofa"]  # a plural typed finds itself: "news" is no "new"
    assert found("dog") == ["a black-and-tan dog's toy", "a dog, on grass"] and found("tan") == found("black")
    assert found("t-shirt") == ["a man in a t-shirt"] and found("dog's") == ["a black-and-tan dog's toy"]
    assert found("news") == [] and found("-") == ["a black-and-tan dog's toy", "a man in a t-shirt"]
    assert found("CAT sits") == ["a cat sits"] and found("bus") == ["three buses"] and found("catc") == []
    assert found("_pure_") == ["100% _pure_ cat"] and found("100%") == ["100% _pure_ cat"] and found("1%") == []
