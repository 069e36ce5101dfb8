"""Fine-tuning records: what each kind of record must hold, and how it becomes tokens.

One place for the rules that the tokenizer actors (building shards) and evaluation (asking the model) share, so a
record is read the same way in training and in evaluation:

- `chat`       `{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}` with at least one
               assistant turn; rendered with the tokenizer's chat template, loss on assistant tokens only.
- `summarize`  `{"document": str, "summary": str}`: a user turn asking for a summary of the document and the summary
               as the assistant's reply (`summarize_messages`), so a summariser is a chat model like any other.
- `labeled`    `{"text": str, "label": str}` with the label one of the configured labels; encoded for an encoder
               as `<cls> text <sep>` (`classify_ids`).
- `ranking`    `{"prompt": str, "responses": [str, ...] best first, "labels": [...] optional}`: a human ranking of
               two or more distinct, non-empty responses; each response is encoded as one chat exchange with the
               prompt (`response_ids`), which is what reward models score and DPO compares.

`check_*` return the reason a record is unusable (a short phrase for `file:line: reason`), or None.
"""

from __future__ import annotations

from typing import Sequence

from models.tokenizer import ROLES, Tokenizer

RECORD_KINDS = ("text", "chat", "summarize", "labeled", "ranking")
SUMMARIZE_INSTRUCTION = "Summarize the following text in one sentence.\n\n"


def check_chat(record) -> str | None:
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        return "expected a JSON object with a non-empty list \"messages\""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{i}] is not an object with \"role\" and \"content\""
        role = message.get("role")
        if role not in ROLES:
            return f"messages[{i}] has unknown role {role!r} (expected one of {', '.join(ROLES)})"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}] ({role}) has {type(message.get('content')).__name__} content, expected a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn (nothing to learn from)"
    return None


def check_summarize(record) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object with string fields \"document\" and \"summary\""
    for name in ("document", "summary"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"field {name!r} is missing or not a non-empty string"
    return None


def check_labeled(record, labels: Sequence[str], text_field: str = "text", label_field: str = "label") -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object with string fields {text_field!r} and {label_field!r}"
    text = record.get(text_field)
    if not isinstance(text, str) or not text.strip():
        return f"field {text_field!r} is missing or not a non-empty string"
    label = record.get(label_field)
    if label not in labels:
        return f"label {label!r} is not one of the configured labels {list(labels)} (data.labels)"
    return None


def check_ranking(record) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object with \"prompt\" and a list \"responses\" (best first)"
    prompt, responses = record.get("prompt"), record.get("responses")
    if not isinstance(prompt, str) or not prompt.strip():
        return "field 'prompt' is missing or not a non-empty string"
    if not isinstance(responses, list) or len(responses) < 2:
        return "field 'responses' must list at least two responses, best first"
    for i, response in enumerate(responses):
        if not isinstance(response, str) or not response.strip():
            return f"responses[{i}] is empty or not a string"
    if len({r.strip() for r in responses}) < len(responses):
        return "the responses are not all different (a ranking of equal responses teaches nothing)"
    return None


def summarize_messages(document: str, summary: str | None = None) -> list[dict]:
    """The conversation that asks for `document`'s summary (with `summary` as the reply when given)."""
    messages = [{"role": "user", "content": SUMMARIZE_INSTRUCTION + document}]
    return messages + ([{"role": "assistant", "content": summary}] if summary is not None else [])


def classify_encoding(tok: Tokenizer, text: str, seq_len: int) -> tuple[list[int], bool]:
    """(`<cls> text <sep>` cut to `seq_len` tokens — the text is cut, never the markers — unpadded, whether the
    text was cut)."""
    ids = tok.encode(text)
    return [tok.cls_id, *ids[: seq_len - 2], tok.sep_id], len(ids) > seq_len - 2


def classify_ids(tok: Tokenizer, text: str, seq_len: int) -> list[int]:
    return classify_encoding(tok, text, seq_len)[0]


def pad(ids: Sequence[int], length: int, value: int = 0) -> list[int]:
    return list(ids) + [value] * (length - len(ids))


def response_encoding(tok: Tokenizer, prompt: str, response: str):
    """A prompt and one response to it as one chat exchange (user turn, then assistant turn), with its assistant
    mask: what reward models score and DPO compares."""
    return tok.encode_chat([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


def response_ids(tok: Tokenizer, prompt: str, response: str) -> list[int]:
    return response_encoding(tok, prompt, response).ids
