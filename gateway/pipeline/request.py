"""The canonical request every stage and the router see, whichever protocol the client spoke."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.pipeline.shaping import OPENAI_SHAPE, ReplyShape

# The shapes of request a front adapter builds; routing hashes a CHAT body's messages, a COMPLETIONS
# body's prompt.
CHAT = "chat"
COMPLETIONS = "completions"


@dataclass(frozen=True, slots=True)
class PromptScan:
    """What one pass over a chat body's messages found (``gateway/front/chat_scan.py``): routing's
    canonical bytes and the length of the conversation's opening in them (as
    ``gateway.routing.prefix.chat_canonical`` returns them), and the prompt estimate
    (``billing.usage_record.estimate_prompt_tokens``)."""

    canonical: bytes
    opening: int
    tokens: int


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
    # The chat adapter's pass over the messages, None where none was made (the router and the
    # metering stages then walk the body themselves). Stages change only top-level fields other than
    # ``messages`` and ``tools`` (``Exchange.set_fields``), so it stays true for the whole request. The
    # router takes ``prompt`` (it becomes None) once it has hashed the canonical bytes, which are not
    # held for the rest of a possibly long stream; the estimate stays for the metering stages.
    prompt: PromptScan | None = None
    prompt_tokens: int | None = None
