"""`python -m pipelines.chat` driven through a pseudo-terminal, as a person types: the streamed reply is the greedy
reply `models.generate` gives for the conversation (the chat template, the stop rule), the context rule leaves out
the oldest messages and says so, `/system` and `/reset` work, Ctrl-D ends with status 0; a checkpoint that cannot
chat is one `error:` line, exit status 2.

The model is built to answer: a decoder whose attention and MLP outputs are zero sees only the current token, and
its output layer maps each token of `<|assistant|>` + REPLY + `<|end|>` to the next one — a greedy reply that ends by
the stop rule, with no training.
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
import torch

from models import save_checkpoint
from models.decoder import Decoder, DecoderConfig
from models.generate import generate
from models.heads import ScalarModel
from models.tokenizer import Tokenizer, train_sentencepiece

SENTENCES = [f"The capital of {c} is {k}." for c, k in [("France", "Paris"), ("Spain", "Madrid"), ("Peru", "Lima")]]
REPLY = "Paris is the capital."
CONTEXT = 48
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROMPT = "you> "


def answering_decoder(tok: Tokenizer) -> Decoder:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=64, n_layer=1, n_head=2, n_kv_head=1, d_ff=64,
                                  max_seq_len=CONTEXT, tie_embeddings=False))
    chain = [tok.role_ids["assistant"], *tok.encode(REPLY), tok.end_id]
    with torch.no_grad():
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for token, following in zip(chain, chain[1:]):
            hidden = model.hidden_states(torch.tensor([[token]]))[0, 0]
            model.lm_head.weight[following] += 20 * hidden / hidden.norm()
    return model.eval()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(train_sentencepiece(SENTENCES * 50, model_type="bpe", vocab_size=400))


@pytest.fixture(scope="module")
def checkpoint(tok, tmp_path_factory) -> tuple[str, Decoder]:
    path = tmp_path_factory.mktemp("chat") / "answers"
    model = answering_decoder(tok)
    save_checkpoint(str(path), model, tokenizer_model=tok.model_proto, meta={})
    return str(path), model


def greedy_reply(model, tok, messages) -> str:
    """The reply the project's generation gives: the conversation's oldest messages left out (never the system prompt
    nor the last one) until 16 tokens of room are left, greedy, ended by the stop rule."""
    system, rest = (messages[:1], messages[1:]) if messages[0]["role"] == "system" else ([], messages)
    while len(prompt := tok.encode_chat(system + rest, add_generation_prompt=True).ids) + 16 > CONTEXT:
        rest = rest[1:]
    out = generate(model, [prompt], max_new_tokens=CONTEXT - len(prompt), temperature=0, stop_ids=tok.stop_ids,
                   pad_id=tok.pad_id)
    assert out.finish_reasons == ["stop"] and tok.finished(out.tokens[0])  # the stop rule ended it, not the budget
    return tok.decode([t for t in out.tokens[0] if t not in tok.stop_ids])


def environ() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    return env | {"TERM": "dumb"}  # no readline escape sequences (those left are stripped anyway)


class Terminal:
    """A command on a pseudo-terminal: what it prints is read up to a marker, lines are typed into it."""

    def __init__(self, argv: list[str], cwd):
        master, slave = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=environ(),
                                        start_new_session=True)
        os.close(slave)
        self.fd, self.pending = master, ""

    def read_until(self, marker: str, timeout: float = 60) -> str:
        """What the command printed up to and including `marker` (line ends as \\n, escape sequences removed)."""
        deadline = time.monotonic() + timeout
        while marker not in self.pending:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {timeout} s; the terminal shows:\n{self.pending[-3000:]}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # EIO: the command has ended
                    chunk = b""
                assert chunk, f"the command ended before {marker!r}:\n{self.pending[-3000:]}"
                self.pending += ESCAPES.sub("", chunk.decode(errors="replace").replace("\r\n", "\n"))
        end = self.pending.index(marker) + len(marker)
        text, self.pending = self.pending[:end], self.pending[end:]
        return text

    def type(self, line: str) -> str:
        """Type `line` and Enter; -> what the command printed until it asked for the next line."""
        os.write(self.fd, line.encode() + b"\n")
        return self.read_until("\n" + PROMPT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        os.close(self.fd)


def reply_of(screen: str) -> str:
    lines = [line for line in screen.splitlines() if line.startswith("assistant> ")]
    assert len(lines) == 1, screen
    return lines[0][len("assistant> "):]


def test_a_conversation_in_the_terminal(checkpoint, tok, tmp_path):
    path, model = checkpoint
    start = time.monotonic()
    terminal = Terminal([sys.executable, "-m", "pipelines.chat", f"checkpoint={path}",
                         f"hydra.run.dir={tmp_path}/outputs"], cwd=tmp_path)
    try:
        banner = terminal.read_until(PROMPT)
        assert f"{CONTEXT}-token context; greedy" in banner and "system prompt: none" in banner, banner
        assert "never medical advice" in banner and "/reset" in banner

        first = "What is the capital of France?"
        screen = terminal.type(first)
        history = [{"role": "user", "content": first}]
        assert reply_of(screen) == greedy_reply(model, tok, history) == REPLY
        assert "left out" not in screen
        history.append({"role": "assistant", "content": REPLY})

        assert "(system prompt: Be brief.)" in terminal.type("/system Be brief.")
        second = "And the capital of Spain?"
        screen = terminal.type(second)
        conversation = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": second}]
        assert reply_of(screen) == greedy_reply(model, tok, conversation)
        # The system prompt and the question leave too little room for the whole history: the oldest goes, said so.
        assert "no longer fit the model's 48-token context and were left out" in screen, screen

        assert "(conversation cleared; the system prompt stays)" in terminal.type("/reset")
        screen = terminal.type(first)
        assert reply_of(screen) == REPLY and "left out" not in screen
        assert "unknown command /help" in terminal.type("/help")

        os.write(terminal.fd, b"\x04")  # Ctrl-D on an empty line: the end
        assert terminal.process.wait(timeout=30) == 0
    finally:
        terminal.close()
    print(f"terminal chat session: {time.monotonic() - start:.1f} s")


def test_a_checkpoint_that_cannot_chat_is_one_line(tmp_path):
    reward = tmp_path / "reward"
    save_checkpoint(str(reward), ScalarModel(Decoder(DecoderConfig(vocab_size=64, d_model=16, n_layer=1, n_head=2,
                                                                   n_kv_head=1, d_ff=32, max_seq_len=32))),
                    tokenizer_model=b"unused")
    cases = [(reward, "holds a reward model: the chat needs a causal LM"), (tmp_path / "nowhere", "does not exist")]
    commands = [subprocess.Popen([sys.executable, "-m", "pipelines.chat", f"checkpoint={checkpoint}",
                                  f"hydra.run.dir={tmp_path}/outputs{i}"], cwd=tmp_path, env=environ(), text=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for i, (checkpoint, _) in enumerate(cases)]  # side by side: each costs seconds of imports
    for command, (checkpoint, expected) in zip(commands, cases):
        stdout, stderr = command.communicate(timeout=120)
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert command.returncode == 2 and len(errors) == 1 and expected in errors[0], stdout + stderr
        assert "Traceback" not in stdout + stderr


def test_the_chat_does_not_import_ray(tmp_path):
    code = "import sys, pipelines.chat; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ray'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ(), text=True, capture_output=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
