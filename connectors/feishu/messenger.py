"""Chat messages: the app bot through the IM API (lark-oapi), or a group's custom-bot webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

import httpx
import lark_oapi as lark
from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody

from connectors import deadline
from connectors.feishu import errors
from storage.errors import AuthFailed, Permanent, RateLimited, Unavailable


def card(title: str, markdown: str, failed: bool) -> dict:
    return {
        "config": {"wide_screen_mode": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": "red" if failed else "green"},
        "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": markdown}}],
    }


class LarkMessenger:
    """Sends as the app's bot into a chat. Feishu drops a repeated `uuid` within an hour, which
    makes a resend after a crash harmless."""

    def __init__(self, client: lark.Client, chat_id: str):
        self.client, self.chat_id = client, chat_id

    def send_card(self, title: str, markdown: str, dedupe_key: str, failed: bool = False) -> None:
        body = (
            CreateMessageRequestBody.builder()
            .receive_id(self.chat_id)
            .msg_type("interactive")
            .content(json.dumps(card(title, markdown, failed), ensure_ascii=False))
            .uuid(dedupe_key[:50])
            .build()
        )
        req = CreateMessageRequest.builder().receive_id_type("chat_id").request_body(body).build()
        errors.call("send message", lambda: self.client.im.v1.message.create(req))


class WebhookMessenger:
    """A group's custom bot (自定义机器人). Not part of the OpenAPI, so lark-oapi has no client for it."""

    def __init__(self, url: str, secret: str = "", http: httpx.Client | None = None, clock: Callable[[], float] = time.time):
        self.url, self.secret, self.clock = url, secret, clock
        self.http = http or deadline.client(30, timeout=10)

    def send_card(self, title: str, markdown: str, dedupe_key: str, failed: bool = False) -> None:
        payload: dict = {"msg_type": "interactive", "card": card(title, markdown, failed)}
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
