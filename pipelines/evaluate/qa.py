"""The `qa` suite (decoder): each question asked through the chat template, correct when the judge says the reply
holds the answer as a whole word in a sentence about the asked subject (`judge.qa_correct`; the rule that decided is
kept per sample); `format_ok` when the reply is one sentence closed by <|end|>. The held-out
questions are asked again as plain text ("Question: ...\\nAnswer:"): does a chat model still know what pre-training
taught? Beside it, a baseline that answers each relation with its most common answer."""

from __future__ import annotations

import re
from collections import Counter

from omegaconf import DictConfig

from models.tokenizer import Tokenizer
from pipelines.checkpoints import Loaded
from pipelines.evaluate.cloze import ANSWER_END
from pipelines.evaluate import judge
from pipelines.evaluate.common import chat_prompt, eval_file, fitting, greedy, rate, split_held_out
from pipelines.storage import read_jsonl


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def answer_in_reply(reply: str, answer: str) -> bool:
    """Whether `reply` holds `answer` as a whole word anywhere, ignoring case and spacing: "The capital of France
    is Paris." holds "Paris"; "Parisian food" and "2.5" (for "2") do not. The rule of question answering."""
    pattern = r"(?<!\w)" + re.escape(normalize(answer)) + ANSWER_END
    return re.search(pattern, normalize(reply)) is not None


def format_ok(reply: str, *, ended: bool) -> bool:
    """A chat reply in the expected form: closed by <|end|> (`ended`) and one sentence — starting with an
    uppercase letter or a digit, ending with ".", "!" or "?"."""
    text = reply.strip()
    return ended and bool(text) and (text[0].isupper() or text[0].isdigit()) and text[-1] in ".!?"


def most_common_answers(items: list[dict]) -> dict[str, str]:
    """{relation: its most common answer} (the first seen among equals): what guessing by relation says."""
    counts: dict[str, Counter] = {}
    for item in items:
        counts.setdefault(item["relation"], Counter())[item["answer"]] += 1
    return {relation: c.most_common(1)[0][0] for relation, c in counts.items()}


def baseline(items: list[dict], guesses: dict[str, str]) -> dict:
    """QA accuracy, seen and held-out, of replying to every question with its relation's guess."""
    seen, held_out = split_held_out(
        [{**item, "correct": answer_in_reply(guesses[item["relation"]], item["answer"])} for item in items])
    return {"baseline_seen": rate(seen), "baseline_held_out": rate(held_out)}


def judged(item: dict, reply: str) -> dict:
    """{"correct", "rule"}: the judge's verdict on a reply to a question item {question, answer, entity}."""
    verdict = judge.qa_correct(reply, item["question"], item["answer"], item["entity"])
    return {"correct": verdict.value, "rule": verdict.rule}


def plain_prompt(tok: Tokenizer, question: str) -> list[int]:
    return tok.encode(f"Question: {question}\nAnswer:")


def chat_replies(model, tok: Tokenizer, questions: list[str], *, max_new_tokens: int,
                 batch_size: int) -> list[tuple[str, bool]]:
    """Each question as a single user turn of the chat template: (the greedy reply up to <|end|>, whether <|end|>
    closed it). A pre-trained model that ends the reply as a document (eos) stops there too."""
    prompts = [chat_prompt(tok, question) for question in questions]
    outputs = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [(tok.decode(tokens).strip(), stop == tok.end_id) for tokens, stop in outputs]


def ask_chat(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Each question asked through the chat template, the reply scored; only a reply closed by <|end|> is
    format_ok."""
    replies = chat_replies(model, tok, [item["question"] for item in items], max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    return [{**item, "reply": reply, **judged(item, reply), "format_ok": format_ok(reply, ended=ended)}
            for item, (reply, ended) in zip(items, replies)]


def ask_plain(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Each question as running text, "Question: ...\\nAnswer:" (no chat tokens, no <bos>, as cloze prompts are);
    the greedy completion up to eos, cut at its first newline, scored."""
    prompts = [plain_prompt(tok, item["question"]) for item in items]
    outputs = greedy(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        reply = tok.decode(tokens).split("\n", 1)[0].strip()
        results.append({**item, "reply": reply, **judged(item, reply)})
    return results


def run_qa(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e, model, tok = cfg.eval, ckpt.model, ckpt.tok
    everything = read_jsonl(eval_file(cfg, "qa_path", "eval/qa.jsonl", "question, answer, relation, held_out"))
    items = everything[:e.qa_limit] if e.qa_limit else everything
    kept, skipped = fitting(model, items, lambda item: chat_prompt(tok, item["question"]), e.qa_max_new_tokens,
                            "qa")
    plain_items, _ = fitting(model, split_held_out(kept)[1], lambda item: plain_prompt(tok, item["question"]),
                             e.qa_max_new_tokens, "qa (plain)")
    chat = ask_chat(model, tok, kept, max_new_tokens=e.qa_max_new_tokens, batch_size=e.batch_size)
    plain = ask_plain(model, tok, plain_items, max_new_tokens=e.qa_max_new_tokens, batch_size=e.batch_size)
    seen, held_out = split_held_out(chat)
    relations = sorted({r["relation"] for r in chat})
    return {"seen": rate(seen), "held_out": rate(held_out), "format_ok": rate(chat, "format_ok"),
            "plain_held_out": rate(plain), "count": len(chat), "skipped": skipped,
            "per_relation": {rel: rate([r for r in chat if r["relation"] == rel]) for rel in relations},
            **baseline(kept, most_common_answers(everything)),
            "samples": chat[:e.samples], "plain_samples": plain[:e.samples]}
