"""What the sync side remembers about the table: how far it has read, which files it uploaded."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.base import Repo
from storage.models import PollState, UploadedFile


class SyncState(Repo):
    def watermark(self, table_id: str) -> int:
        with self.session() as s:
            row = s.get(PollState, table_id)
            return row.watermark_ms if row else 0

    def set_watermark(self, table_id: str, watermark_ms: int) -> None:
        self._upsert(PollState(table_id=table_id, watermark_ms=watermark_ms))

    def full_scan(self, table_id: str) -> datetime | None:
        """When the whole table was last read: a new process (cron's `once`) need not read it again."""
        with self.session() as s:
            row = s.get(PollState, f"full_scan:{table_id}")
            return datetime.fromtimestamp(row.watermark_ms / 1000, UTC) if row else None

    def set_full_scan(self, table_id: str, at: datetime) -> None:
        self._upsert(PollState(table_id=f"full_scan:{table_id}", watermark_ms=int(at.timestamp() * 1000)))

    def shows_previews(self, table_id: str) -> bool | None:
        """Whether the table has a column to show previews in, as its poller last read its columns
        (None: not read yet). Workers of the scale-out mode never read the table themselves."""
        with self.session() as s:
            row = s.get(PollState, f"previews:{table_id}")
            return bool(row.watermark_ms) if row else None

    def set_shows_previews(self, table_id: str, shows: bool) -> None:
        self._upsert(PollState(table_id=f"previews:{table_id}", watermark_ms=int(shows)))

    def first_seen(self, key: str, now: datetime) -> datetime:
        """When `key` was first asked about (now, the first time). Kept beside the watermarks."""
        name = f"since:{key}"
        with self.session() as s:
            row = s.get(PollState, name)
            if row is not None:
                return datetime.fromtimestamp(row.watermark_ms / 1000, UTC)
        self._upsert(PollState(table_id=name, watermark_ms=int(now.timestamp() * 1000)))
        return now

    def uploaded(self, sha256: str, app_token: str) -> str | None:
        """The Feishu file token of content already uploaded to this base, so a retried flush
        never uploads the same video twice."""
        with self.session() as s:
            row = s.get(UploadedFile, (sha256, app_token))
            return row.file_token if row else None

    def remember_upload(self, sha256: str, app_token: str, file_token: str, size: int) -> None:
        self._upsert(UploadedFile(sha256=sha256, app_token=app_token, file_token=file_token, size=size))
