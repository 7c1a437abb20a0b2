"""The database: SQLAlchemy's engine and sessions, under pyramid_tm.

Each request gets ``request.dbsession``, joined to the request's
transaction (pyramid_tm): the view changes rows, pyramid_tm commits when
the view returns and aborts when it raises.  A WebSocket request is the
exception: it lasts as long as its connection, and a transaction held that
long would hold a database connection too (and, with SQLite, block the
checkpoints of its log).  So pyramid_tm leaves it alone, and its handler
opens a short transaction of its own, ``with request.tm:``, whenever it
reads or writes.
"""

import contextlib
import fcntl
import hashlib
import os
import tempfile

import zope.sqlalchemy
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pyramid.settings import asbool
from sqlalchemy import create_engine, engine_from_config, event, make_url, text
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import NullPool
from stargate import IncorrectlyConfigured, is_websocket

from .job import JobRecord
from .meta import Base

__all__ = [
    "Base",
    "JobRecord",
    "alembic_config",
    "check_revision",
    "includeme",
    "upgrade",
]

#: The environment variable that overrides ``sqlalchemy.url`` (a production
#: database's password does not belong in a committed file).
URL_VARIABLE = "{{ cookiecutter.package | upper }}_DATABASE_URL"

#: Where alembic finds the migrations of the project.
MIGRATIONS = "{{ cookiecutter.package }}:alembic"


def database_url(settings, environ=os.environ):
    """Return the database URL: from the environment, else from the settings."""
    url = environ.get(URL_VARIABLE) or settings.get("sqlalchemy.url")
    if not url:
        raise IncorrectlyConfigured(
            f"no database: set sqlalchemy.url in the ini file or {URL_VARIABLE}"
        )
    return url


def get_engine(settings):
    """Return the engine of ``sqlalchemy.*`` settings (or of ``URL_VARIABLE``)."""
    engine = engine_from_config(
        {**settings, "sqlalchemy.url": database_url(settings)}, "sqlalchemy."
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _tune_sqlite)
    return engine


def _tune_sqlite(dbapi_connection, connection_record):
    # WAL: readers and the writer of other processes do not wait for each
    # other; synchronous=NORMAL is safe in WAL mode and spares an fsync per
    # commit.  A writer waits at most busy_timeout for another, and that wait
    # holds the whole process (docs: blocking with SQLite), so keep it short.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=2000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def upgrade(settings):
    """Create the database if it is missing and migrate it to the latest
    revision (``alembic -c production.ini upgrade head`` does the same).

    Processes that start together (two ``pserve``, gunicorn's workers, or
    on PostgreSQL the processes of several machines) take turns: the first
    migrates, the others find it done.
    """
    url = database_url(settings)
    with _migration_lock(url):
        command.upgrade(alembic_config(url), "head")


def check_revision(settings):
    """Refuse to start on a database that is not at the migrations' head.

    Otherwise every request would fail on a missing table or column.

    :raises IncorrectlyConfigured: saying which revision the database is at, which
        the code needs, and how to migrate.
    """
    url = database_url(settings)
    heads = set(ScriptDirectory.from_config(alembic_config(url)).get_heads())
    engine = get_engine(settings)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    if current != heads:
        at = ", ".join(sorted(current)) or "none (an empty database)"
        raise IncorrectlyConfigured(
            f"the database is at revision {at}, the code needs "
            f"{', '.join(sorted(heads))}: migrate it first, "
            "alembic -c production.ini upgrade head "
            "(or set database.upgrade_on_start = true)"
        )


def alembic_config(url):
    """Return alembic's configuration for the database at ``url``: what the
    ini file's ``[alembic]`` section gives the command line."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["url"] = url
    return config


#: The key of the PostgreSQL advisory lock that migrations take turns on:
#: a number of this project's own (any other user of advisory locks on the
#: database picks its own numbers).
MIGRATION_LOCK = int.from_bytes(
    hashlib.sha256(b"{{ cookiecutter.package }} migrations").digest()[:8],
    "big",
    signed=True,
)


@contextlib.contextmanager
def _migration_lock(url):
    """Hold a lock for as long as the block runs, for every process that
    migrates the database at ``url``.

    PostgreSQL's advisory lock serves processes of every machine, and ends
    with its connection (a process killed meanwhile does not keep it).  A
    SQLite database is a file of one machine: a lock file beside it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                lock = text("SELECT pg_advisory_lock(:key)")
                connection.execute(lock, {"key": MIGRATION_LOCK})
                try:
                    yield
                finally:
                    unlock = text("SELECT pg_advisory_unlock(:key)")
                    connection.execute(unlock, {"key": MIGRATION_LOCK})
        finally:
            engine.dispose()
        return
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        path = f"{parsed.database}.migrating"
    else:
        # Another database (MySQL's GET_LOCK would serve every machine):
        # the processes of this machine take turns on a file of its own.
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        path = os.path.join(tempfile.gettempdir(), f"{__name__}-{digest}.migrating")
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _not_a_websocket(request):
    """pyramid_tm's activate hook: every request but a WebSocket's."""
    return not is_websocket(None, request)


def includeme(config):
    """Set the database up: ``config.include("{{ cookiecutter.package }}.models")``.

    With ``database.upgrade_on_start = true`` (development.ini), the
    database is created and migrated first; without (production.ini), a
    database that is not migrated stops the start with what to do.
    """
    settings = config.get_settings()
    if asbool(settings.get("database.upgrade_on_start")):
        upgrade(settings)
    else:
        check_revision(settings)
    # One transaction manager per request, and nothing touches the database
    # outside a transaction (NoTransaction instead of an implicit one).
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    settings["tm.activate_hook"] = _not_a_websocket
    config.include("pyramid_tm")

    session_factory = sessionmaker(bind=get_engine(settings))
    config.registry["dbsession_factory"] = session_factory

    def dbsession(request):
        session = session_factory(info={"request": request})
        zope.sqlalchemy.register(session, transaction_manager=request.tm)
        return session

    config.add_request_method(dbsession, reify=True)
