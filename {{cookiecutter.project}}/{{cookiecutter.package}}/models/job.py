"""The jobs table: one row per job that was ever changed."""

from sqlalchemy import String
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from .meta import Base

#: The databases whose upsert store_state() knows.
UPSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


class JobRecord(Base):
    """A job's stored state (its resource is :class:`..resources.Job`)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="off")


def store_state(dbsession, job_id, state):
    """Set the state of job ``job_id``, creating its row if it has none.

    One statement (INSERT ... ON CONFLICT DO UPDATE), not a read then a
    write: two processes changing a new job at once both succeed, and with
    SQLite the transaction takes the write lock at its first statement.
    """
    dialect = dbsession.get_bind().dialect.name
    if dialect not in UPSERTS:
        raise NotImplementedError(f"store_state() has no upsert for {dialect}")
    statement = UPSERTS[dialect](JobRecord).values(id=job_id, state=state)
    dbsession.execute(
        statement.on_conflict_do_update(
            index_elements=[JobRecord.id], set_={"state": state}
        )
    )
