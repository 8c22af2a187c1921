from logging.config import fileConfig

from alembic import context
from sqlalchemy import event, text

from core.config import get_settings
from core.db import make_engine
from core.tables import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, compare_type=True,
                      render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _no_foreign_keys(conn, _record) -> None:  # type: ignore[no-untyped-def]
    """SQLite's batch mode copies a table and drops the old one: with foreign keys on, the drop deletes every row
    that refers to it (ON DELETE CASCADE), every item and result of an old database. Checked at the end instead."""
    conn.execute("PRAGMA foreign_keys=OFF")


def run_online() -> None:
    engine = make_engine(url, statement_timeout_s=None)
    sqlite = url.startswith("sqlite")
    if sqlite:
        event.listen(engine, "connect", _no_foreign_keys)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True,
                          render_as_batch=sqlite, transactional_ddl=True)  # SQLite too: a failed check undoes all
        before = context.get_context().get_current_revision()
        with context.begin_transaction():
            context.run_migrations()
            migrated = context.get_context().get_current_revision() != before  # else nothing to check, every start
            if sqlite and migrated and (broken := connection.execute(text("PRAGMA foreign_key_check")).all()):
                raise RuntimeError(f"the migrated database has rows that refer to none: {broken[:5]}")
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
