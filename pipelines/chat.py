"""Terminal chat: `python -m pipelines.chat checkpoint=<run or checkpoint dir> [generation.temperature=0.7]`.

A conversation with a decoder checkpoint in this terminal, held exactly as the server holds one — the same
functions, not copies: the tokenizer's chat template (`encode_chat`) and stop rule (`stop_ids`: a reply ends at
<|end|> or eos), the context rule (`pipelines.serve.context.fit_reply`: when the conversation no longer fits the
model's context its oldest messages are left out, never the system prompt or the last message, and the terminal
says so), the generation defaults (conf/generation/, which is also the server's `serve.generation`: greedy and no
system prompt, the evaluated settings) and the server's detokenizer (`pipelines.serve.stream.TextStream`: a
character split across tokens is never printed broken). Tokens are printed as `models.generate.stream_generate`
produces them. So one question gets the same greedy answer here, from the API, on the chat page and in the
evaluation's table.

Commands: `/system <text>` sets the system prompt (`/system` alone removes it), `/reset` clears the conversation
(the system prompt stays), `/quit` or Ctrl-D ends (exit status 0); Ctrl-C stops a reply. A checkpoint that is
missing or not a decoder is one `error:` line, exit status 2, before the weights are read. No Ray: the model runs
in this process (as `litgpt chat` and nanochat's chat CLI).
"""

from __future__ import annotations

import sys
from typing import TextIO

import torch
from omegaconf import DictConfig, OmegaConf

from models.generate import check_sampling, stream_generate
from pipelines import checkpoints
from pipelines.entry import stage_main
from pipelines.errors import ConfigError
from pipelines.serve.context import ContextExceeded, fit_reply, with_system_prompt
from pipelines.serve.stream import TextStream

CHATTABLE = {"kinds": ("decoder",), "purpose": "the chat"}
USER, ASSISTANT = "you> ", "assistant> "
HELP = ("/system <text> sets the system prompt (/system alone removes it), /reset clears the conversation, "
        "/quit or Ctrl-D ends; Ctrl-C stops a reply")
DISCLAIMER = "Replies come from a small model trained by this project: often wrong, and never medical advice."


class Chat:
    """A conversation with `model` (a Decoder) and its tokenizer `tok`, printed to `out`. `generation`: the
    conf/generation/ settings; `seed`: the sampler's seed when the temperature is above 0."""

    def __init__(self, model, tok, generation: DictConfig, *, seed: int | None = None, out: TextIO = sys.stdout):
        self.model, self.tok, self.out = model, tok, out
        self.context = int(model.cfg.max_seq_len)
        self.temperature, self.top_p = float(generation.temperature), float(generation.top_p)
        self.max_tokens, self.min_reply = int(generation.max_tokens), int(generation.min_reply_tokens)
        try:
            check_sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_tokens)
        except ValueError as error:
            raise ConfigError(f"generation: {error}") from None
        self.system: str | None = generation.system_prompt or None
        self.seed = seed
        self.turns: list[dict] = []  # user and assistant messages, oldest first

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def command(self, line: str) -> bool:
        """Run a `/command`; -> False when the chat ends."""
        name, _, arg = line.partition(" ")
        if name == "/quit":
            return False
        if name == "/reset":
            self.turns = []
            self.say("(conversation cleared" + ("; the system prompt stays)" if self.system else ")"))
        elif name == "/system":
            self.system = arg.strip() or None
            self.say(f"(system prompt: {self.system})" if self.system else "(no system prompt)")
        else:
            self.say(f"(unknown command {name}: {HELP})")
        return True

    def reply(self, text: str) -> None:
        """Answer the user's `text` with the conversation so far, streaming the reply; keep both in the history."""
        user = {"role": "user", "content": text}
        messages = with_system_prompt([*self.turns, user], self.system)
        try:
            fitted, budget = fit_reply(self.tok, messages, context=self.context, max_tokens=None,
                                       default_max_tokens=self.max_tokens, min_reply_tokens=self.min_reply)
        except ContextExceeded as error:
            self.say(f"({error}: shorten the message or the system prompt)")
            return
        if fitted.dropped:
            what = "oldest message" if fitted.dropped == 1 else f"{fitted.dropped} oldest messages"
            verbs = ("fits", "was") if fitted.dropped == 1 else ("fit", "were")
            self.say(f"(the {what} no longer {verbs[0]} the model's {self.context}-token context and {verbs[1]} "
                     f"left out)")
        stop_ids = self.tok.stop_ids
        text_stream = TextStream(self.tok.decode, skip_ids=stop_ids)
        tokens = stream_generate(self.model, fitted.ids, max_new_tokens=budget, temperature=self.temperature,
                                 top_p=self.top_p, stop_ids=stop_ids, pad_id=self.tok.pad_id, seed=self.seed)
        generated: list[int] = []
        self.say(ASSISTANT, end="")
        try:
            for token in tokens:
                generated.append(token)
                self.say(text_stream.push([token]), end="")
        except KeyboardInterrupt:
            self.say(text_stream.finish())
            self.say("(stopped)")
        else:
            self.say(text_stream.finish())
            if not self.tok.finished(generated):
                self.say(f"(the reply reached its budget of {budget} tokens)")
        finally:
            tokens.close()
        self.turns += [user, {"role": "assistant", "content": text_stream.text}]

    def run(self, read=input) -> None:
        """Read lines until /quit or end of input."""
        while True:
            try:
                line = read(USER).strip()
            except (EOFError, KeyboardInterrupt):
                self.say()
                return
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return
                continue
            self.reply(line)


@stage_main("chat")
def main(cfg: DictConfig) -> None:
    checkpoint = None if OmegaConf.is_missing(cfg, "checkpoint") else cfg.checkpoint
    loaded = checkpoints.load(checkpoint, **CHATTABLE, device=cfg.chat.device)  # checked before the weights load
    if cfg.chat.threads:
        torch.set_num_threads(int(cfg.chat.threads))
    chat = Chat(loaded.model, loaded.tok, cfg.generation, seed=cfg.chat.seed)
    sampling = "greedy" if chat.temperature == 0 else f"temperature {chat.temperature:g}, top_p {chat.top_p:g}"
    params = sum(p.numel() for p in loaded.model.parameters())
    chat.say(f"chat with {loaded.path} ({params / 1e6:.1f}M parameters, {chat.context}-token context; {sampling}, "
             f"replies up to {chat.max_tokens} tokens; system prompt: {chat.system or 'none'})")
    chat.say(DISCLAIMER)
    chat.say(HELP)
    if sys.stdin.isatty():
        import readline  # noqa: F401 - line editing and history for input()
    chat.run()


if __name__ == "__main__":
    main()
