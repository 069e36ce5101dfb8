"""The context rule, shared by the server and the terminal chat: a conversation that no longer fits the model's
context loses its oldest messages — never the system prompt (the first message, when its role is "system") nor the
last message — until the prompt leaves room for the reply.

One pass: each message is encoded once (the chat template is a concatenation of per-message pieces), and the
messages to leave out follow from their token counts by arithmetic. Plain Python over the project's tokenizer: no
Ray, no Serve, no FastAPI, so that `python -m pipelines.chat` imports it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


class ContextExceeded(ValueError):
    """Even with every message but the system prompt and the last one left out, the prompt leaves no room for the
    reply; `prompt_tokens` is what remains, `system` whether a system prompt is among it."""

    def __init__(self, *, context: int, prompt_tokens: int, want: int, system: bool):
        kept = "the system prompt and the last message take" if system else "the last message takes"
        super().__init__(f"This model's context is {context} tokens (prompt and reply together): {kept} "
                         f"{prompt_tokens} tokens and the reply needs {want}")
        self.context, self.prompt_tokens, self.want, self.system = context, prompt_tokens, want, system


@dataclass
class FittedChat:
    ids: list[int]  # the prompt, ending in the assistant's turn
    dropped: int  # messages left out (the oldest after the system prompt)


def fit_chat(tok, messages: Sequence[dict], *, context: int, want: int) -> FittedChat:
    """The prompt for `messages` (`[{"role", "content"}]`, roles already checked) that leaves `want` tokens of the
    `context` for the reply, with the fewest oldest messages left out; raises `ContextExceeded` when even the system
    prompt and the last message leave too little room. Equal to re-encoding the conversation after each message left
    out, in one pass."""
    head = tok.encode_chat([]).ids  # <bos>
    tail = tok.encode_chat([], add_generation_prompt=True).ids[len(head):]  # <|assistant|>
    pieces = [tok.encode_chat([m]).ids[len(head):] for m in messages]  # <|role|>content<|end|> each
    system = 1 if messages and messages[0]["role"] == "system" else 0
    fixed = len(head) + len(tail) + sum(len(p) for p in pieces[:system])
    sizes = [len(p) for p in pieces[system:]]
    total = fixed + sum(sizes)
    dropped = 0
    while total + want > context:
        if dropped >= len(sizes) - 1:
            raise ContextExceeded(context=context, prompt_tokens=total, want=want, system=bool(system))
        total -= sizes[dropped]
        dropped += 1
    ids = list(head)
    for piece in pieces[:system] + pieces[system + dropped:]:
        ids += piece
    return FittedChat(ids + tail, dropped)


def with_system_prompt(messages: Sequence[dict], system_prompt: str | None) -> list[dict]:
    """`messages` with the default system prompt (`generation.system_prompt`) first when they have none of their
    own; unchanged when the default is null/empty, as evaluated."""
    if not system_prompt or (messages and messages[0]["role"] == "system"):
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def fit_reply(tok, messages: Sequence[dict], *, context: int, max_tokens: int | None, default_max_tokens: int,
              min_reply_tokens: int) -> tuple[FittedChat, int]:
    """The context rule with the generation settings (conf/generation/): the prompt leaves room for `max_tokens`
    when the request sets it, else for at least `min_reply_tokens`; -> (the fitted prompt, the reply's token
    budget: `max_tokens`, else `default_max_tokens` cut to the room the context leaves)."""
    want = max_tokens or min(min_reply_tokens, default_max_tokens)
    fitted = fit_chat(tok, messages, context=context, want=want)
    return fitted, max_tokens or min(default_max_tokens, context - len(fitted.ids))
