"""The canonical request every stage and the router see, whichever protocol the client spoke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.pipeline.shaping import OPENAI_SHAPE, ReplyShape

# The shapes of request a front adapter builds; routing hashes a CHAT body's messages, a COMPLETIONS
# body's prompt.
CHAT = "chat"
COMPLETIONS = "completions"


@dataclass(slots=True)
class ParsedRequest:
    kind: str  # CHAT or COMPLETIONS
    body: dict[str, Any]  # the OpenAI-shaped body sent to the upstream (parsed once)
    model: str
    stream: bool
    include_usage: bool  # what the client asked for (a usage chunk at the end of its stream)
    # How the answer goes back to the client (the front adapter's protocol).
    shape: ReplyShape = OPENAI_SHAPE
    # What is sent upstream when it is not the client's own bytes: a body translated to Chat Completions.
    payload: bytes | None = None
