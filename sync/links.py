"""Signed URLs expire (OSS: 7 days by default); the sheet's links must keep working. Links that
stop working within the margin are signed anew, in the DB and in the row, without re-uploading."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pipeline.publish import Publisher
from storage.locks import ProjectLocks
from storage.projects import ProjectStore
from sync import lifecycle
from sync.lifecycle import Lifecycle

log = logging.getLogger(__name__)


def renew_links(store: ProjectStore, publisher: Publisher, life: Lifecycle, locks: ProjectLocks,
                now: datetime, margin: timedelta) -> int:
    """Renew every link that stops working before `now + margin`; how many projects changed."""
    before, renewed = now + margin, 0
    for p in store.projects():
        urls = [p.final_url, p.cover_url, *(s.url for s in store.segments(p.id))]
        if p.row_deleted or not any(publisher.expiring(url, before) for url in urls):
            continue  # the common case, decided without taking the project's lock
        with locks.hold(p.id) as got:
            if not got:
                continue  # a worker has it: whatever it publishes now comes with fresh links
            paths = store.paths(p)
            segments = []
            for seg in store.segments(p.id):
                if url := publisher.renewed(paths.segment(seg.index), seg.url, before):
                    seg.url = url
                    segments.append(seg)
            final = publisher.renewed(paths.final_video, p.final_url, before)
            cover = publisher.renewed(paths.cover, p.cover_url, before)
            if not (segments or final or cover):
                continue
            life.commit(p.id, lambda q: lifecycle.links_renewed(q, final, cover), tuple(segments))
            renewed += 1
            log.info("links renewed project=%s record=%s segments=%d final=%s", p.id, p.record_id,
                     len(segments), bool(final))
    return renewed
