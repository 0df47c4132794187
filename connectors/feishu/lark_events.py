"""Record-change events over lark-oapi's long connection (`lark.ws.Client`, FEISHU_API.md §6).

The SDK keeps its asyncio loop in a module global captured at import and blocks in `start()`
forever; it is run in a thread of its own with a fresh loop put in that global, which is why
one process holds at most one such connection (one app; every base it subscribed arrives on it).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

import lark_oapi as lark
import lark_oapi.ws.client as ws_client
from lark_oapi.api.drive.v1 import P2DriveFileBitableRecordChangedV1, SubscribeFileRequest

from connectors.feishu import errors
from connectors.feishu.protocol import RecordChange

log = logging.getLogger(__name__)


class LarkRecordEvents:
    def __init__(self, client: lark.Client, app_id: str, app_secret: str, base_url: str, app_tokens: list[str]):
        self.client, self.app_id, self._secret = client, app_id, app_secret
        self.base_url, self.app_tokens = base_url.rstrip("/"), list(dict.fromkeys(app_tokens))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def subscribe(self) -> None:
        """Feishu sends a base's record events only to apps subscribed to it (needs manage permission)."""
        for token in self.app_tokens:
            req = SubscribeFileRequest.builder().file_token(token).file_type("bitable").build()
            errors.call(f"subscribe to base {token}", lambda: self.client.drive.v1.file.subscribe(req))

    def start(self, on_change: Callable[[RecordChange], None]) -> None:
        self.subscribe()

        def handle(data: P2DriveFileBitableRecordChangedV1) -> None:
            # Runs on the SDK's loop and must answer within 3 s: hand the news over, nothing more.
            event = data.event
            for item in (event.action_list if event else None) or []:
                fields = {v.field_id for v in [*(item.before_value or []), *(item.after_value or [])] if v.field_id}
                on_change(RecordChange(app_token=event.file_token or "", table_id=event.table_id or "",
                                       record_id=item.record_id or "", action=item.action or "",
                                       field_ids=frozenset(fields)))

        dispatcher = lark.EventDispatcherHandler.builder("", "").register_p2_drive_file_bitable_record_changed_v1(
            handle).build()
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            ws_client.loop = loop
            client = lark.ws.Client(self.app_id, self._secret, event_handler=dispatcher, domain=self.base_url,
                                    log_level=lark.LogLevel.WARNING)
            ready.set()
            try:
                client.start()
            except RuntimeError:
                pass  # close() stopped the loop
            except Exception as e:  # refused credentials: events stay off, polling carries on
                log.warning("record events off error=%s", e)
            finally:
                self._shutdown(loop, client)

        self._thread = threading.Thread(target=serve, name="feishu-events", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)

    @staticmethod
    def _shutdown(loop: asyncio.AbstractEventLoop, client: lark.ws.Client) -> None:
        client._auto_reconnect = False  # the SDK has no public way to stop: close without reconnecting
        tasks = asyncio.all_tasks(loop)
        for task in tasks:
            task.cancel()
        try:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(client._disconnect())
        except Exception as e:
            log.debug("record events: closing error=%s", e)
        finally:
            loop.close()

    def close(self) -> None:
        if self._loop is not None and self._thread is not None:
            if not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = self._thread = None
