"""Anthropic Messages request bodies checked and translated into the Chat Completions body a worker reads.

``to_chat(body)`` returns the chat body; anything Anthropic would refuse raises a 400 whose ``param`` is
the offending field, in Anthropic's dotted form (``messages.1.content.0.tool_use_id``). ``cache_control``
is accepted anywhere and dropped (the workers' prefix cache is automatic); ``thinking`` blocks sent back
in an assistant turn are dropped too (a chat worker has no use for them).
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway import errors
from gateway.front.openai_body import MAX_MODEL_CHARS

# The most output tokens one request may ask for: above any served model's context window.
MAX_TOKENS_CEILING = 1_048_576
_ROLES = ("user", "assistant")
_TOOL_CHOICES = ("auto", "any", "tool", "none")
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}


def bad(param: str, message: str) -> errors.GatewayError:
    return errors.invalid_request(f"{param}: {message}", param=param, code="invalid_request")


def _type(param: str, expected: str) -> errors.GatewayError:
    return bad(param, f"Input should be {expected}")


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _type(param, "a valid string")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type(name, "a valid number")
    if not low <= value <= high:
        raise bad(name, f"Input should be between {low:g} and {high:g}")


def check_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise bad("model", "Field required")
    if not isinstance(model, str) or not model:
        raise _type("model", "a non-empty string")
    if len(model) > MAX_MODEL_CHARS:
        raise bad("model", f"String should have at most {MAX_MODEL_CHARS} characters")
    return model


def check_max_tokens(body: dict[str, Any]) -> int:
    value = body.get("max_tokens")
    if value is None:
        raise bad("max_tokens", "Field required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type("max_tokens", "a valid integer")
    if not 1 <= value <= MAX_TOKENS_CEILING:
        raise bad("max_tokens", f"Input should be between 1 and {MAX_TOKENS_CEILING}")
    return value


def to_chat(body: dict[str, Any], model: str, max_tokens: int | None) -> dict[str, Any]:
    """The Chat Completions body for a checked ``model`` and ``max_tokens`` (None for count_tokens)."""
    chat: dict[str, Any] = {"model": model}
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system)
        if text:
            messages.append({"role": "system", "content": text})
    _messages(body.get("messages"), messages)
    chat["messages"] = messages
    if max_tokens is not None:
        chat["max_tokens"] = max_tokens
    tools = body.get("tools")
    if tools is not None:
        chat["tools"] = _tools(tools)
    choice = body.get("tool_choice")
    if choice is not None:
        _tool_choice(choice, chat)
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list):
            raise _type("stop_sequences", "a valid list")
        for i, stop in enumerate(stops):
            _string(stop, f"stop_sequences.{i}")
        if stops:
            chat["stop"] = stops
    _number(body, "temperature", 0.0, 1.0)
    _number(body, "top_p", 0.0, 1.0)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise _type("top_k", "a non-negative integer")
        chat["top_k"] = top_k
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise _type("metadata", "a valid dictionary")
        user = metadata.get("user_id")
        if user is not None:
            chat["user"] = _string(user, "metadata.user_id")[:256]
    thinking = body.get("thinking")
    if thinking is not None:
        _thinking(thinking, chat)
    output = body.get("output_config")
    if output is not None:
        _output_config(output, chat)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _type("stream", "a valid boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}  # the final message_delta carries the usage
    return chat


def shows_thinking(body: dict[str, Any]) -> bool:
    """Whether the client asked for thinking blocks (a checked body): the worker's reasoning is shown."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _thinking(thinking: Any, chat: dict[str, Any]) -> None:
    """``budget_tokens`` as a ``reasoning_effort`` (``output_config.effort`` wins); ``disabled`` as vLLM's
    ``chat_template_kwargs.enable_thinking: false``."""
    if not isinstance(thinking, dict):
        raise _type("thinking", "a valid dictionary")
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise bad("thinking.type", "Input should be 'enabled', 'disabled' or 'adaptive'")
    if kind == "disabled":
        chat["chat_template_kwargs"] = {"enable_thinking": False}
        return
    budget = thinking.get("budget_tokens")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise _type("thinking.budget_tokens", "a positive integer")
        chat["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _output_config(output: Any, chat: dict[str, Any]) -> None:
    """``effort`` as the worker's ``reasoning_effort``; ``format`` (a JSON schema) as its ``response_format``."""
    if not isinstance(output, dict):
        raise _type("output_config", "a valid dictionary")
    effort = output.get("effort")
    if effort is not None:
        if effort not in _EFFORTS:
            raise bad("output_config.effort", "Input should be 'low', 'medium', 'high', 'xhigh' or 'max'")
        chat["reasoning_effort"] = _EFFORTS[effort]
    shape = output.get("format")
    if shape is not None:
        if not isinstance(shape, dict) or shape.get("type") != "json_schema":
            raise bad("output_config.format.type", "Input should be 'json_schema'")
        schema = shape.get("schema")
        if not isinstance(schema, dict):
            raise _type("output_config.format.schema", "a valid dictionary")
        chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _type("system", "a valid string or a list of text blocks")
    parts = []
    for i, block in enumerate(system):
        param = f"system.{i}"
        if not isinstance(block, dict):
            raise _type(param, "a valid dictionary")
        if block.get("type") != "text":
            raise bad(f"{param}.type", "Input should be 'text'")
        parts.append(_string(block.get("text"), f"{param}.text"))
    return "\n\n".join(parts)


def _messages(value: Any, out: list[dict[str, Any]]) -> None:
    if value is None:
        raise bad("messages", "Field required")
    if not isinstance(value, list):
        raise _type("messages", "a valid list")
    if not value:
        raise bad("messages", "List should have at least 1 item")
    previous_tool_uses: set[str] = set()
    for i, message in enumerate(value):
        param = f"messages.{i}"
        if not isinstance(message, dict):
            raise _type(param, "a valid dictionary")
        role = message.get("role")
        if role not in _ROLES:
            raise bad(f"{param}.role", "Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise bad(f"{param}.content", "Field required")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            previous_tool_uses = set()
        elif isinstance(content, list):
            if role == "user":
                _user_blocks(content, param, previous_tool_uses, out)
                previous_tool_uses = set()
            else:
                previous_tool_uses = _assistant_blocks(content, param, out)
        else:
            raise _type(f"{param}.content", "a valid string or a list of content blocks")


def _block(block: Any, param: str) -> str:
    if not isinstance(block, dict):
        raise _type(param, "a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise bad(f"{param}.type", "Field required")
    return kind


def _unknown(kind: str, param: str, allowed: str) -> errors.GatewayError:
    return bad(f"{param}.type", f"Input tag '{kind[:50]}' found using 'type' does not match any of the expected "
               f"tags: {allowed}")


def _user_blocks(blocks: list[Any], param: str, tool_uses: set[str], out: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{param}.content.{j}"
        kind = _block(block, where)
        if kind == "text":
            parts.append({"type": "text", "text": _string(block.get("text"), f"{where}.text")})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_result":
            use_id = _string(block.get("tool_use_id"), f"{where}.tool_use_id")
            if use_id not in tool_uses:
                raise bad(f"{where}.tool_use_id", f"unexpected `tool_use_id` found in `tool_result` blocks: "
                          f"{use_id[:100]}. Each `tool_result` block must have a corresponding `tool_use` block "
                          "in the previous message.")
            is_error = block.get("is_error")
            if is_error is not None and not isinstance(is_error, bool):
                raise _type(f"{where}.is_error", "a valid boolean")
            text = _tool_result_text(block.get("content"), f"{where}.content")
            out.append({"role": "tool", "tool_call_id": use_id, "content": f"Error: {text}" if is_error else text})
        elif kind == "document":
            parts.append({"type": "text", "text": _document_text(block, where)})
        else:
            raise _unknown(kind, where, "'text', 'image', 'tool_result', 'document'")
    if parts:
        if len(parts) == 1 and parts[0]["type"] == "text":
            out.append({"role": "user", "content": parts[0]["text"]})
        else:
            out.append({"role": "user", "content": parts})


def _assistant_blocks(blocks: list[Any], param: str, out: list[dict[str, Any]]) -> set[str]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        where = f"{param}.content.{j}"
        kind = _block(block, where)
        if kind == "text":
            texts.append(_string(block.get("text"), f"{where}.text"))
        elif kind == "tool_use":
            use_id = _string(block.get("id"), f"{where}.id")
            name = _string(block.get("name"), f"{where}.name")
            arguments = block.get("input")
            if not isinstance(arguments, dict):
                raise _type(f"{where}.input", "a valid dictionary")
            calls.append({"id": use_id, "type": "function",
                          "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise _unknown(kind, where, "'text', 'tool_use', 'thinking', 'redacted_thinking'")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    out.append(message)
    return {c["id"] for c in calls}


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _type(f"{param}.source", "a valid dictionary")
    kind = source.get("type")
    if kind == "base64":
        media = _string(source.get("media_type"), f"{param}.source.media_type")
        data = _string(source.get("data"), f"{param}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": _string(source.get("url"), f"{param}.source.url")}}
    raise bad(f"{param}.source.type", "Input should be 'base64' or 'url'")


def _document_text(block: dict[str, Any], param: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "text":
        return _string(source.get("data"), f"{param}.source.data")
    raise bad(f"{param}.source.type", "only plain-text documents are supported")


def _tool_result_text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _type(param, "a valid string or a list of content blocks")
    texts = []
    for k, block in enumerate(content):
        where = f"{param}.{k}"
        kind = _block(block, where)
        if kind == "text":
            texts.append(_string(block.get("text"), f"{where}.text"))
        elif kind == "image":
            _image(block, where)
            texts.append("[image]")  # a chat tool message carries text only
        else:
            raise _unknown(kind, where, "'text', 'image'")
    return "\n".join(texts)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _type("tools", "a valid list")
    out = []
    for i, tool in enumerate(tools):
        param = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _type(param, "a valid dictionary")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad(f"{param}.type", f"tool type '{str(kind)[:50]}' is not supported; only custom tools are")
        name = _string(tool.get("name"), f"{param}.name")
        if not name:
            raise bad(f"{param}.name", "String should have at least 1 character")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _type(f"{param}.input_schema", "a valid dictionary")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        description = tool.get("description")
        if description is not None:
            function["description"] = _string(description, f"{param}.description")
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    if not isinstance(choice, dict):
        raise _type("tool_choice", "a valid dictionary")
    kind = choice.get("type")
    if kind not in _TOOL_CHOICES:
        raise bad("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    if kind == "tool":
        name = _string(choice.get("name"), "tool_choice.name")
        if not any(t["function"]["name"] == name for t in chat.get("tools", ())):
            raise bad("tool_choice.name", f"Tool '{name[:100]}' not found in 'tools'")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None:
        if not isinstance(parallel, bool):
            raise _type("tool_choice.disable_parallel_tool_use", "a valid boolean")
        if parallel and kind != "none":
            chat["parallel_tool_calls"] = False
