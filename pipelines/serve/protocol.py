"""The OpenAI wire format: request checking (every field's type and range, one clear message naming it), error
objects, and the response and stream-chunk objects. No Serve, no model: plain dicts in, plain dicts out."""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system prompt
SEED_RANGE = (-2**63, 2**64 - 1)  # what torch.Generator.manual_seed takes
MAX_STOP = 4  # stop strings per request, as OpenAI


class APIError(Exception):
    """Answered as `{"error": {"message", "type", "param", "code"}}` with `status` (and `headers`)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def internal(request_id: str) -> APIError:
    """The answer to a failure inside the server: a generic message naming the request id under which the cause
    was logged (never the exception's text: it can hold tracebacks, process ids, addresses and paths)."""
    return APIError(500, f"The server had an error while processing your request (request id {request_id}); "
                         f"its log has the details", type="server_error", code="internal_error")


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


@dataclass
class Sampling:
    """The sampling fields shared by both endpoints, checked."""
    max_tokens: int | None  # None: the server's default, cut to the room the context leaves
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    include_usage: bool = False


def _number(body: dict, name: str, default, low: float, high: float, *, low_open: bool = False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float)
                                                                           and not math.isfinite(value)):
        raise bad(f"'{name}' must be a number, got {json.dumps(value)[:80]}", param=name)
    if value < low or value > high or (low_open and value == low):  # ints compared exactly: no float overflow
        side = "(" if low_open else "["
        raise bad(f"'{name}' must be in {side}{low:g}, {high:g}], got {str(value)[:40]}", param=name)
    return float(value)


def _integer(body: dict, name: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be an integer, got {json.dumps(value)[:80]}", param=name)
    if low is not None and not low <= value <= high:
        raise bad(f"'{name}' must be between {low} and {high}, got {str(value)[:40]}", param=name)
    return value


def _bool(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad(f"'{name}' must be true or false, got {json.dumps(value)[:80]}", param=name)
    return value


def sampling(body: dict, *, defaults: dict, cap: int, max_stop_chars: int) -> Sampling:
    """Check the shared fields (`defaults`: the server's temperature and top_p; `cap`: the most max_tokens;
    `max_stop_chars`: the longest stop string)."""
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise bad(f"'n' must be 1: this server returns one choice per request, got {n}", param="n")
    max_tokens = _integer(body, "max_completion_tokens")
    name = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, name = _integer(body, "max_tokens"), "max_tokens"
    if max_tokens is not None and not 1 <= max_tokens <= cap:
        raise bad(f"'{name}' must be between 1 and {cap} (the model's context holds the prompt and the reply), "
                  f"got {str(max_tokens)[:40]}", param=name)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    elif not (isinstance(stop, list) and len(stop) <= MAX_STOP and all(isinstance(s, str) for s in stop)):
        raise bad(f"'stop' must be a string or a list of at most {MAX_STOP} strings, got {json.dumps(stop)[:80]}",
                  param="stop")
    if any(len(s) > max_stop_chars for s in stop):
        raise bad(f"'stop' strings must be at most {max_stop_chars} characters each", param="stop")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad(f"'stream_options' must be an object, got {json.dumps(options)[:80]}", param="stream_options")
    return Sampling(
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", defaults["temperature"], 0.0, 2.0),
        top_p=_number(body, "top_p", defaults["top_p"], 0.0, 1.0, low_open=True),
        seed=_integer(body, "seed", *SEED_RANGE),
        stop=[s for s in stop if s],
        stream=_bool(body, "stream"),
        include_usage=_bool(options, "include_usage"),
    )


def model_name(body: dict, served: str) -> str:
    model = body.get("model")
    if model is None:
        return served
    if not isinstance(model, str):
        raise bad(f"'model' must be a string, got {json.dumps(model)[:80]}", param="model")
    if model != served:
        raise APIError(404, f"The model '{model[:80]}' does not exist: this server serves '{served}' (see /v1/models)",
                       param="model", code="model_not_found")
    return model


def messages(body: dict, *, max_messages: int) -> list[dict]:
    """`messages` as [{"role", "content": str}]: text content parts are joined, the `developer` role is `system`;
    anything else, or more than `max_messages`, is a 400."""
    value = body.get("messages")
    if value is None:
        raise bad("'messages' is required: a list of {\"role\", \"content\"} objects", param="messages")
    if not isinstance(value, list) or not value:
        raise bad(f"'messages' must be a non-empty list, got {json.dumps(value)[:80]}", param="messages")
    if len(value) > max_messages:
        raise bad(f"'messages' holds {len(value)} messages: this server takes at most {max_messages} in one request "
                  f"(the oldest would not fit the model's context anyway)", param="messages", code="too_many_messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"'{where}' must be an object with 'role' and 'content'", param=where)
        role = m.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            raise bad(f"'{where}.role' must be one of {', '.join((*ROLES, *ROLE_ALIASES))}, got "
                      f"{json.dumps(role)[:80]}", param=f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise bad(f"'{where}.content' parts must be {{\"type\": \"text\", \"text\": str}}: this model "
                          f"reads text only", param=f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise bad(f"'{where}.content' must be a string, got {json.dumps(content)[:80]}",
                      param=f"{where}.content")
        out.append({"role": role, "content": content})
    return out


def prompt_text(body: dict) -> str:
    value = body.get("prompt")
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        value = value[0]
    if not isinstance(value, str) or not value:
        raise bad(f"'prompt' must be a non-empty string, got {json.dumps(value)[:80]}", param="prompt")
    return value


# ---- responses ----

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class Reply:
    """What the response objects are made from."""
    id: str
    model: str
    chat: bool
    created: int = field(default_factory=lambda: int(time.time()))

    def whole(self, text: str, finish_reason: str, used: dict) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                      "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return {"id": self.id, "object": "chat.completion" if self.chat else "text_completion",
                "created": self.created, "model": self.model, "choices": [choice], "usage": used}

    def chunk(self, *, text: str | None = None, role: bool = False, finish_reason: str | None = None,
              used: dict | None = None) -> dict:
        if used is not None:  # the usage chunk: no choices
            choices = []
        elif self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
        else:
            choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]
        out = {"id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
               "created": self.created, "model": self.model, "choices": choices}
        if used is not None:
            out["usage"] = used
        return out


def sse(obj) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
