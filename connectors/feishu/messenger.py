"""Chat messages: the app bot through the IM API (lark-oapi), or a group's custom-bot webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import lark_oapi as lark
from lark_oapi.api.im.v1 import CreateImageRequest, CreateImageRequestBody, CreateMessageRequest, CreateMessageRequestBody

from connectors import deadline
from connectors.feishu import errors
from connectors.feishu.protocol import Card
from storage.errors import AuthFailed, Permanent, RateLimited, Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


def card_json(card: Card, image_key: str | None = None) -> dict:
    """Card JSON 2.0: the cover (when uploaded), the text, and a button that opens the row."""
    elements: list[dict] = []
    if image_key:
        elements.append({"tag": "img", "img_key": image_key, "alt": {"tag": "plain_text", "content": "封面"},
                         "scale_type": "fit_horizontal"})
    elements.append({"tag": "markdown", "content": card.markdown})
    if card.link:
        elements.append({"tag": "button", "text": {"tag": "plain_text", "content": "打开这一行"},
                         "type": "danger" if card.failed else "primary",
                         "behaviors": [{"type": "open_url", "default_url": card.link}]})
    return {
        "schema": "2.0",
        "config": {"width_mode": "fill"},
        "header": {"title": {"tag": "plain_text", "content": card.title}, "template": "red" if card.failed else "green"},
        "body": {"elements": elements},
    }


class LarkMessenger:
    """Sends as the app's bot into a chat. Feishu drops a repeated `uuid` within an hour, which
    makes a resend after a crash harmless."""

    def __init__(self, client: lark.Client, chat_id: str, observe: Callable[[str, str], None] | None = None):
        self.client, self.chat_id = client, chat_id
        # Told of every call: (what, "ok" or the error's Feishu code / kind), for the metrics.
        self.observe = observe

    def _call(self, what: str, send: Callable[[], T]) -> T:
        return errors.observed(self.observe, what, lambda: errors.call(what, send))

    def send_card(self, card: Card, dedupe_key: str) -> None:
        body = (
            CreateMessageRequestBody.builder()
            .receive_id(self.chat_id)
            .msg_type("interactive")
            .content(json.dumps(card_json(card, self._image_key(card.image)), ensure_ascii=False))
            .uuid(dedupe_key[:50])
            .build()
        )
        req = CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body).build()
        self._call("send message", lambda: self.client.im.v1.message.create(req))

    def _image_key(self, image: Path | None) -> str | None:
        """The cover, uploaded for this card; without it (gone from disk, refused) the card still goes."""
        if image is None or not image.is_file():
            return None
        with image.open("rb") as f:
            req = CreateImageRequest.builder().request_body(
                CreateImageRequestBody.builder().image_type("message").image(f).build()).build()
            try:
                return self._call("upload image", lambda: self.client.im.v1.image.create(req)).data.image_key
            except (Permanent, AuthFailed) as e:  # e.g. no im:resource permission: the words still count
                log.warning("card image not uploaded error=%s", e)
                return None


class WebhookMessenger:
    """A group's custom bot (自定义机器人). Not part of the OpenAPI, so lark-oapi has no client for it."""

    def __init__(self, url: str, secret: str = "", http: httpx.Client | None = None, clock: Callable[[], float] = time.time):
        self.url, self.secret, self.clock = url, secret, clock
        self.http = http or deadline.client(30, timeout=10)

    def send_card(self, card: Card, dedupe_key: str) -> None:
        # A custom bot has no upload API, so its card has no picture.
        payload: dict = {"msg_type": "interactive", "card": card_json(card)}
        if self.secret:
            ts = int(self.clock())
            payload |= {"timestamp": str(ts), "sign": sign(self.secret, ts)}
        try:
            resp = self.http.post(self.url, json=payload)
            body = resp.json()
        except (httpx.TimeoutException, httpx.TransportError, ValueError) as e:
            raise Unavailable(f"群机器人暂时不可用，稍后重试 ({type(e).__name__})") from e
        code = body.get("code", body.get("StatusCode", 0))
        if code == 0:
            return
        detail = f"code={code} msg={body.get('msg') or body.get('StatusMessage')}"
        if code == 11232 or resp.status_code == 429:
            raise RateLimited(f"群机器人发送过快，稍后重试 ({detail})")
        if code == 19021:
            raise AuthFailed(f"群机器人签名校验失败：检查 FEISHU_WEBHOOK_SECRET 和本机时间 ({detail})")
        raise Permanent(f"群机器人拒绝了消息 ({detail})")


def sign(secret: str, timestamp: int) -> str:
    # Feishu signs with "timestamp\nsecret" as the HMAC key over an empty message.
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
