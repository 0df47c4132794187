"""OpenAI-compatible chat (DeepSeek by default): one call, one reply text, errors in our tree."""

from __future__ import annotations

import base64
from typing import Any, Protocol

import openai

from connectors import deadline
from connectors.openai_errors import translated
from storage.errors import BadInput, Transient

SERVICE = "大模型服务"


class ChatClient(Protocol):
    model: str

    def complete(self, messages: list[dict], *, json_mode: bool = False) -> str: ...


class OpenAIChat:
    """Never retries by itself (max_retries=0 by default): the caller owns retry decisions."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout: float = 60,
        max_retries: int = 0,
        temperature: float = 0.7,
    ):
        self.base_url = base_url
        self.model = model
        self.temperature = temperature
        self._api_key = api_key
        # `timeout` bounds each phase, the deadline transport the whole reply.
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout,
                                     http_client=deadline.client(timeout))

    def __repr__(self) -> str:
        # Keep the key out of tracebacks and logs that print the object.
        return f"OpenAIChat(base_url={self.base_url!r}, model={self.model!r})"

    def complete(self, messages: list[dict], *, json_mode: bool = False) -> str:
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if json_mode else {}
        with translated(SERVICE, model=self.model, base_url=self.base_url, api_key=self._api_key):
            reply = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, **extra
            )
        return self._text(reply)

    def _text(self, reply: Any) -> str:
        choice = reply.choices[0] if reply.choices else None
        content = choice.message.content if choice else None
        if choice and choice.finish_reason == "content_filter":
            # Asking again gets the same refusal; only different words can help.
            raise BadInput(f"{SERVICE}（模型 {self.model}）拒绝了这段内容（内容审核），请修改场景描述后重试")
        # A cut-off reply is half a JSON document; asking again (maybe shorter) is the only fix.
        if not content or not content.strip() or choice.finish_reason == "length":
            raise Transient(f"{SERVICE}（模型 {self.model}）的回复为空或被截断，稍后自动重试 (reply truncated)")
        return content


def image_part(jpeg: bytes) -> dict:
    """A chat content part carrying a JPEG inline, for models that accept images."""
    data = base64.b64encode(jpeg).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}}


def user_message(text: str, jpeg: bytes | None = None) -> dict:
    """Plain text, or text plus the image as content parts when one is given."""
    if jpeg is None:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, image_part(jpeg)]}
