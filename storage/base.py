"""What every repository shares: one engine, short sessions, and an insert-or-update that
survives another process inserting the same key first."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session


class Repo:
    def __init__(self, engine: Engine):
        self.engine = engine

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def _upsert(self, row) -> None:
        """merge() reads then inserts; another process may insert in between. The second try
        finds the row and updates it."""
        for attempt in range(2):
            with self.session() as s:
                try:
                    s.merge(row)
                    s.commit()
                    return
                except IntegrityError:
                    s.rollback()
                    if attempt:
                        raise
