"""How alembic reaches the database.

From the command line, ``alembic -c production.ini upgrade head`` reads the
URL from the ini file's ``sqlalchemy.url`` (or its environment variable);
:func:`{{ cookiecutter.package }}.models.upgrade` passes it directly.
"""

from alembic import context
from pyramid.paster import get_appsettings, setup_logging

from {{ cookiecutter.package }}.models import Base, database_url, get_engine

config = context.config
url = config.attributes.get("url")
if url is None:
    setup_logging(config.config_file_name)
    url = database_url(get_appsettings(config.config_file_name))


def run_migrations_offline():
    """Write the SQL of the migrations (``alembic upgrade head --sql``)."""
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    """Run the migrations on the database."""
    engine = get_engine({"sqlalchemy.url": url})
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite alters a table by copying it: alembic's batch mode.
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
