"""Evaluation: `python -m pipelines.evaluate checkpoint=runs/pretrain/<run> [eval.suites=[cloze,qa]]`.

What does the model know, and can it do what it was fine-tuned for? An evaluation runs suites, each for one kind
of checkpoint; `eval.suites` names them (null = by kind: decoder -> cloze, qa; sequence_classifier -> classify;
encoder -> encoder):

- `cloze` (decoder): greedy completions of the built-in facts' cloze prompts ("The capital of France is" ->
  "Paris"), correct when the completion starts with the answer as a whole word (`answer_matches`). Held-out
  entities (whose facts appear only in the pre-training corpus) are reported apart: later stages compare on them.
- `qa` (decoder): each question asked through the chat template, correct when the reply holds the answer as a
  whole word (`answer_in_reply`); `format_ok` when the reply is one sentence closed by <|end|>. The held-out
  questions are asked again as plain text ("Question: ...\\nAnswer:"): does a chat model still know what
  pre-training taught? Beside it, a baseline that answers each relation with its most common answer.
- `safety` (decoder): the held-out unsafe prompts (eval/unsafe.jsonl) and the questions about held-out medical
  conditions (eval/medical.jsonl), asked through the chat template: the polite-refusal rate on unsafe prompts, the
  disclaimer rate on medical answers, the over-refusal rate (medical questions refused: a model that refuses
  everything is not safe, only useless), the rude rate over all replies (pipelines/corpus/detectors.py), and with
  `eval.reward_model` the reward model's mean score of the replies. Held-out prompts only: no alignment stage
  trains on them.
- `summarize` (decoder): ROUGE-L F1 of greedy summaries of the summarisation test set.
- `ppl` (decoder): perplexity on the validation split of the general and medical corpora, tokenized with the
  checkpoint's own tokenizer (shards built on Ray, or reused when a manifest matches).
- `classify` (sequence_classifier): accuracy on the classification test set; label names and sequence length
  come from the checkpoint's meta.json.
- `encoder` (encoder): its pre-training objective's validation metrics (MLM accuracy and perplexity, NSP
  accuracy) on the shards it was trained on, or on `shards=DIR`.

The report is printed and written as `eval.json` beside the checkpoint's weights: {"checkpoint", "step", "stage",
"kind", "<suite>": {...}, ...}. A later run replaces the sections of the suites it runs and keeps the others.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections import Counter
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict
from rouge_score import rouge_scorer

from models.generate import generate
from models.tokenizer import Tokenizer
from pipelines import checkpoints, storage
from pipelines.checkpoints import Loaded
from pipelines.corpus import detectors
from pipelines.data import records
from pipelines.data.shards import read_manifest
from pipelines.entry import stage_main
from pipelines.eval_report import print_report
from pipelines.errors import CheckpointError, ConfigError, MissingPathError
from pipelines.train.objectives import objective_class, summarize

log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"
DEFAULT_SUITES = {"decoder": ["cloze", "qa"], "sequence_classifier": ["classify"], "encoder": ["encoder"]}
# What follows an answer for it to count as a whole word: no word character, nor ".5" / ",000" / ":30".
ANSWER_END = r"(?!\w)(?![.,:;]\w)"


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
    lines = storage.read_bytes(path).decode().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return items[:limit] if limit else items


# ---- scoring rules (plain functions of strings) ----

def answer_matches(completion: str, answer: str) -> bool:
    """Whether `completion` starts with `answer` as a whole word: "Paris." and "Paris, the" count for "Paris";
    "metalloid." for "metal", "He." for "H", "26." and "2.5" for "2" do not. The rule of cloze completions."""
    return re.match(re.escape(answer) + ANSWER_END, completion) is not None


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


def rate(results: list[dict], key: str = "correct") -> float | None:
    """The share of `results` whose `key` is true; None when there are none."""
    return sum(bool(r[key]) for r in results) / len(results) if results else None


def split_held_out(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """(results about entities that fine-tuning data names, results about held-out ones: described only in the
    pre-training corpus)."""
    return [r for r in results if not r.get("held_out")], [r for r in results if r.get("held_out")]


# ---- generation ----

def greedy(model, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: list[int], pad_id: int,
           batch_size: int) -> list[tuple[list[int], int | None]]:
    """Greedy continuations of `prompts` in batches: per prompt, (new tokens without the stop token, the stop
    token that ended it or None)."""
    out = []
    for i in range(0, len(prompts), batch_size):
        gen = generate(model, prompts[i:i + batch_size], max_new_tokens=max_new_tokens, temperature=0.0,
                       stop_ids=stop_ids, pad_id=pad_id)
        for tokens, reason in zip(gen.tokens, gen.finish_reasons):
            out.append((tokens[:-1], tokens[-1]) if reason == "stop" else (tokens, None))
    return out


def fitting(model, items: list[dict], prompt: Callable[[dict], list[int]], max_new_tokens: int,
            what: str) -> tuple[list[dict], int]:
    """The items whose prompt leaves room for `max_new_tokens` in the model's max_seq_len, and how many do not
    (logged: they are left out)."""
    room = model.cfg.max_seq_len - max_new_tokens
    kept = [item for item in items if len(prompt(item)) <= room]
    if len(kept) < len(items):
        log.warning("%s: %d of %d prompts leave no room for %d new tokens in max_seq_len=%d; skipped", what,
                    len(items) - len(kept), len(items), max_new_tokens, model.cfg.max_seq_len)
    return kept, len(items) - len(kept)


def chat_prompt(tok: Tokenizer, question: str) -> list[int]:
    return tok.encode_chat([{"role": "user", "content": question}], add_generation_prompt=True).ids


def plain_prompt(tok: Tokenizer, question: str) -> list[int]:
    return tok.encode(f"Question: {question}\nAnswer:")


def summary_prompt(tok: Tokenizer, document: str, room: int) -> tuple[list[int], bool]:
    """The chat prompt asking for `document`'s summary in at most `room` tokens, and whether the document had to be
    cut (at a token, as fine-tuning with data.too_long=truncate cuts it) to fit."""
    ids = tok.encode_chat(records.summarize_messages(document), add_generation_prompt=True).ids
    if len(ids) <= room:
        return ids, False
    pieces = tok.encode(document)
    for keep in range(len(pieces) - (len(ids) - room), 0, -1):  # decoding and re-encoding may shift a token
        ids = tok.encode_chat(records.summarize_messages(tok.decode(pieces[:keep])), add_generation_prompt=True).ids
        if len(ids) <= room:
            return ids, True
    raise ConfigError(f"summarize: the instruction alone fills the {room} tokens that max_seq_len leaves beside "
                      f"eval.summarize_max_new_tokens; lower it")


# ---- suites: pure evaluations of a model on records ----

def cloze(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int,
          prefix_bos: bool) -> list[dict]:
    """Greedy completions of cloze prompts: each item with its "completion" and whether it is "correct".

    A cloze prompt is a sentence from the middle of a document. In pre-training <bos> only ever precedes a
    document's first sentence, so by default the prompt is given without it, as running text (as LAMBADA-style
    evaluations do); `prefix_bos` asks instead for the prompt as the start of a new document.
    """
    prefix = [tok.bos_id] if prefix_bos else []
    prompts = [prefix + tok.encode(item["prompt"]) for item in items]
    outputs = greedy(model, prompts, max_new_tokens=max_new_tokens, stop_ids=tok.stop_ids, pad_id=tok.pad_id,
                     batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        completion = tok.decode(tokens).strip()
        results.append({**item, "completion": completion, "correct": answer_matches(completion, item["answer"])})
    return results


def chat_replies(model, tok: Tokenizer, questions: list[str], *, max_new_tokens: int,
                 batch_size: int) -> list[tuple[str, bool]]:
    """Each question as a single user turn of the chat template: (the greedy reply up to <|end|>, whether <|end|>
    closed it). A pre-trained model that ends the reply as a document (eos) stops there too."""
    prompts = [chat_prompt(tok, question) for question in questions]
    outputs = greedy(model, prompts, max_new_tokens=max_new_tokens, stop_ids=tok.stop_ids, pad_id=tok.pad_id,
                     batch_size=batch_size)
    return [(tok.decode(tokens).strip(), stop == tok.end_id) for tokens, stop in outputs]


def ask_chat(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Each question asked through the chat template, the reply scored; only a reply closed by <|end|> is
    format_ok."""
    replies = chat_replies(model, tok, [item["question"] for item in items], max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    return [{**item, "reply": reply, "correct": answer_in_reply(reply, item["answer"]),
             "format_ok": format_ok(reply, ended=ended)} for item, (reply, ended) in zip(items, replies)]


def safety(model, tok: Tokenizer, unsafe: list[dict], medical: list[dict], *, max_new_tokens: int,
           batch_size: int) -> list[dict]:
    """Unsafe prompts ({prompt}) and medical questions ({question}) asked through the chat template, each reply
    with the detectors' verdicts."""
    items = [{**item, "set": "unsafe", "question": item["prompt"]} for item in unsafe]
    items += [{**item, "set": "medical"} for item in medical]
    replies = chat_replies(model, tok, [item["question"] for item in items], max_new_tokens=max_new_tokens,
                           batch_size=batch_size)
    return [{**item, "reply": reply, "refusal": detectors.is_polite_refusal(reply),
             "disclaimer": detectors.has_disclaimer(reply), "rude": detectors.is_rude(reply)}
            for item, (reply, _) in zip(items, replies)]


def reward_scores(reward_model, tok: Tokenizer, results: list[dict], *, batch_size: int) -> list[float]:
    """The reward model's score of each (question, reply), rendered as the chat turn it was trained on."""
    sequences = [records.response_ids(tok, r["question"], r["reply"]) for r in results]
    return reward_model.score(sequences, pad_id=tok.pad_id, batch_size=batch_size)


def ask_plain(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Each question as running text, "Question: ...\\nAnswer:" (no chat tokens, no <bos>, as cloze prompts are);
    the greedy completion up to eos, cut at its first newline, scored."""
    prompts = [plain_prompt(tok, item["question"]) for item in items]
    outputs = greedy(model, prompts, max_new_tokens=max_new_tokens, stop_ids=tok.stop_ids, pad_id=tok.pad_id,
                     batch_size=batch_size)
    results = []
    for item, (tokens, _) in zip(items, outputs):
        reply = tok.decode(tokens).split("\n", 1)[0].strip()
        results.append({**item, "reply": reply, "correct": answer_in_reply(reply, item["answer"])})
    return results


def summaries(model, tok: Tokenizer, items: list[dict], *, max_new_tokens: int, batch_size: int) -> list[dict]:
    """Greedy summaries of `items` ({document, summary}) asked through the chat template, with ROUGE-L F1; a
    document too long for the model's max_seq_len is cut ("truncated")."""
    room = model.cfg.max_seq_len - max_new_tokens
    encoded = [summary_prompt(tok, item["document"], room) for item in items]
    outputs = greedy(model, [ids for ids, _ in encoded], max_new_tokens=max_new_tokens,
                     stop_ids=tok.stop_ids, pad_id=tok.pad_id, batch_size=batch_size)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    results = []
    for item, (_, cut), (tokens, _) in zip(items, encoded, outputs):
        reply = tok.decode(tokens).strip()
        results.append({**item, "reply": reply, "rougeL": scorer.score(item["summary"], reply)["rougeL"].fmeasure,
                        "truncated": cut})
    return results


@torch.no_grad()
def classify(model, tok: Tokenizer, items: list[dict], *, labels: list[str], seq_len: int,
             batch_size: int) -> list[dict]:
    """Each {text, label} item with the "predicted" label of a sequence classifier and whether it is "correct"."""
    results = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        ids = torch.tensor([records.pad(records.classify_ids(tok, item["text"], seq_len), seq_len, tok.pad_id)
                            for item in chunk])  # (B, seq_len)
        predicted = model(ids, attention_mask=ids != tok.pad_id).argmax(dim=-1)  # (B,)
        results += [{**item, "predicted": labels[p], "correct": labels[p] == item["label"]}
                    for item, p in zip(chunk, predicted.tolist())]
    return results


def shard_batches(files: list[str], columns: list[str], batch_size: int, max_batches: int | None):
    """{column: LongTensor} batches read from parquet shard files, at most `max_batches` (None = all)."""
    batches = 0
    for path in files:
        fs, p = storage.filesystem(path)
        table = pq.read_table(p, filesystem=fs, columns=columns)
        arrays = {}
        for name in columns:
            column = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(column.type):  # token columns: (rows, length)
                values = column.flatten().to_numpy().reshape(table.num_rows, -1)
            else:  # per-example labels: (rows,)
                values = column.to_numpy()
            arrays[name] = torch.from_numpy(values.astype("int64"))
        for i in range(0, table.num_rows, batch_size):
            if max_batches and batches >= max_batches:
                return
            batches += 1
            yield {name: values[i:i + batch_size] for name, values in arrays.items()}


@torch.no_grad()
def perplexity(model, files: list[str], *, batch_size: int, max_batches: int | None) -> float:
    """Token-level perplexity of a causal LM over CLM shard files (blocks of seq_len + 1 tokens)."""
    total, count = 0.0, 0
    for batch in shard_batches(files, ["input_ids"], batch_size, max_batches):
        ids = batch["input_ids"]
        logits = model(ids[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return math.exp(total / max(1, count))


@torch.no_grad()
def encoder_metrics(model, meta: dict, manifest: dict, *, batch_size: int, max_batches: int | None) -> dict:
    """The encoder's pre-training objective on the validation pairs: MLM accuracy/perplexity, NSP accuracy."""
    name = meta["objective"]
    objective = objective_class(name)(model, meta["objective_config"], manifest["tokenizer"]["special_ids"],
                                      vocab_size=manifest["tokenizer"]["vocab_size"],
                                      first_ordinary_id=manifest["tokenizer"]["first_ordinary_id"]).eval()
    generator = torch.Generator().manual_seed(0)  # the same masks on every evaluation
    sums: dict[str, list[float]] = {}
    for batch in shard_batches(manifest["splits"]["valid"]["files"], ["input_ids", "token_type_ids", "is_next"],
                               batch_size, max_batches):
        _, stats = objective(batch, generator)
        for k, (s, c) in stats.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
    totals = {k: (torch.tensor(s), torch.tensor(c)) for k, (s, c) in sums.items()}
    return {f"val_{k}": v for k, v in summarize(totals, objective.ppl_of).items()}


# ---- suites: a checkpoint and the config -> one section of the report ----

def builtin_file(cfg: DictConfig, *parts: str) -> str:
    from pipelines.data.build import builtin_corpus  # imports Ray: only when the built-in corpus is used

    return storage.join(builtin_corpus(cfg.data), *parts)


def eval_file(cfg: DictConfig, setting: str, builtin: str, fields: str) -> str:
    """The file `eval.<setting>` names, else the built-in corpus's `builtin`."""
    path = cfg.eval[setting] or builtin_file(cfg, builtin)
    if not storage.exists(path):
        raise MissingPathError(f"eval.{setting}={path} does not exist (jsonl: {fields})")
    return path


def run_cloze(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e = cfg.eval
    items = read_jsonl(eval_file(cfg, "cloze_path", "eval/cloze.jsonl", "prompt, answer, held_out"), e.cloze_limit)
    results = cloze(ckpt.model, ckpt.tok, items, max_new_tokens=e.cloze_max_new_tokens, batch_size=e.batch_size,
                    prefix_bos=e.prefix_bos)
    seen, held_out = split_held_out(results)
    return {"accuracy": rate(results), "seen": rate(seen), "held_out": rate(held_out), "count": len(results),
            "samples": results[:e.samples]}


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


def run_safety(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e, model, tok = cfg.eval, ckpt.model, ckpt.tok
    unsafe = [item for item in read_jsonl(eval_file(cfg, "unsafe_path", "eval/unsafe.jsonl", "prompt, held_out"))
              if item.get("held_out")][:e.safety_limit]
    medical = [item for item in read_jsonl(eval_file(cfg, "medical_path", "eval/medical.jsonl",
                                                     "question, condition, held_out")) if item.get("held_out")]
    medical = medical[:e.safety_limit]
    unsafe, skipped_unsafe = fitting(model, unsafe, lambda item: chat_prompt(tok, item["prompt"]),
                                     e.safety_max_new_tokens, "safety (unsafe)")
    medical, skipped_medical = fitting(model, medical, lambda item: chat_prompt(tok, item["question"]),
                                       e.safety_max_new_tokens, "safety (medical)")
    results = safety(model, tok, unsafe, medical, max_new_tokens=e.safety_max_new_tokens, batch_size=e.batch_size)
    on_unsafe = [r for r in results if r["set"] == "unsafe"]
    on_medical = [r for r in results if r["set"] == "medical"]
    section = {"refusal": rate(on_unsafe, "refusal"), "disclaimer": rate(on_medical, "disclaimer"),
               "over_refusal": rate(on_medical, "refusal"), "rude": rate(results, "rude"),
               "unsafe_count": len(on_unsafe), "medical_count": len(on_medical),
               "skipped": skipped_unsafe + skipped_medical, "reward": None}
    if e.reward_model:
        scorer = checkpoints.load(e.reward_model, setting="eval.reward_model", kinds=("scalar_model",),
                                  purpose="the safety suite's reward")
        reward_model = scorer.model
        if scorer.tok.sha256 != tok.sha256:
            raise ConfigError(f"eval.reward_model={e.reward_model} uses another tokenizer than {ckpt.path}")
        for r, score in zip(results, reward_scores(reward_model, tok, results, batch_size=e.batch_size)):
            r["reward"] = score
        section["reward"] = sum(r["reward"] for r in results) / len(results) if results else None
    return section | {"samples": on_unsafe[:e.samples] + on_medical[:e.samples]}


def run_summarize(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    e = cfg.eval
    items = read_jsonl(eval_file(cfg, "summarize_path", "task/summarize_test.jsonl", "document, summary"),
                       e.summarize_limit)
    results = summaries(ckpt.model, ckpt.tok, items, max_new_tokens=e.summarize_max_new_tokens,
                        batch_size=e.batch_size)
    mean = sum(r["rougeL"] for r in results) / len(results) if results else None
    return {"rougeL": mean, "count": len(results), "truncated": sum(r["truncated"] for r in results),
            "samples": results[:e.samples]}


def run_classify(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    labels, seq_len = ckpt.meta.get("labels"), ckpt.meta.get("seq_len")
    if not labels or not seq_len:
        raise CheckpointError(f"{ckpt.path}/meta.json has no \"labels\" (class names) or \"seq_len\": the classify "
                              f"suite needs the checkpoint of a classification fine-tune")
    items = read_jsonl(eval_file(cfg, "classify_path", "task/classify_test.jsonl", "text, label"))
    known = [item for item in items if item["label"] in labels]
    results = classify(ckpt.model, ckpt.tok, known, labels=list(labels), seq_len=seq_len,
                       batch_size=cfg.eval.batch_size)
    return {"accuracy": rate(results), "count": len(results), "skipped": len(items) - len(known)}


PPL_SUBSETS = ("general", "medical")


def ppl_shards_config(cfg: DictConfig, subset: str, tokenizer_path: str) -> DictConfig:
    """The data stage's config for causal-LM shards of the built-in `subset`'s documents, tokenized with the
    checkpoint's tokenizer (data sizes, seq_len and root as `cfg` says)."""
    data_cfg = copy.deepcopy(cfg)
    with open_dict(data_cfg):
        data_cfg.data.subset = subset
        data_cfg.data.record = "text"  # documents, whatever records the stage that called us reads
        data_cfg.tokenizer.path = tokenizer_path
        data_cfg.objective = {"name": "clm", "shard_format": "clm"}
        data_cfg.force = False
    return data_cfg


def run_ppl(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    from cluster.connect import connect  # Ray: only when shards are built
    from pipelines.data.build import prepare_shards

    if cfg.data.source != "builtin":
        raise ConfigError(f"the ppl suite measures the built-in corpus's {' and '.join(PPL_SUBSETS)} documents; "
                          f"data.source={cfg.data.source} has neither (use data=builtin)")
    connect(cfg.cluster)
    section = {}
    for subset in PPL_SUBSETS:
        manifest = prepare_shards(ppl_shards_config(cfg, subset, storage.join(ckpt.path, "tokenizer.model")))
        files = manifest["splits"]["valid"]["files"]
        if not files:
            log.warning("%s (%s) has no validation examples: no %s perplexity", manifest["dir"], subset, subset)
            continue
        section[subset] = perplexity(ckpt.model, files, batch_size=cfg.eval.batch_size,
                                     max_batches=cfg.eval.ppl_batches)
    return section


def run_encoder(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    manifest = checkpoint_shards(ckpt.meta, shards, checkpoint=ckpt.path)
    if not manifest or manifest["format"] != "pairs" or not manifest["splits"]["valid"]["files"]:
        raise ConfigError(f"evaluating the encoder {ckpt.path} needs sentence-pair shards with a validation "
                          f"split: pass shards=DIR (built with python -m pipelines.data objective=mlm_nsp)")
    metrics = encoder_metrics(ckpt.model, ckpt.meta, manifest, batch_size=cfg.eval.batch_size,
                              max_batches=cfg.eval.ppl_batches)
    return metrics | {"shards": manifest["dir"]}


def checkpoint_shards(meta: dict, shards: str | None, *, checkpoint: str) -> dict | None:
    """The manifest of `shards`, else of the shards the checkpoint was trained on; None when neither is known."""
    where = storage.absolute(shards) if shards else meta.get("shards")
    if not where:
        return None
    manifest = read_manifest(where)
    if manifest is None:
        what = f"shards={shards}" if shards else f"the shards {checkpoint} was trained on ({where})"
        raise MissingPathError(f"{what}: no manifest.json there; pass shards=DIR with the validation shards")
    return manifest


Runner = Callable[..., dict]
# Suite name -> (the kind of checkpoint it evaluates, what runs it).
SUITES: dict[str, tuple[str, Runner]] = {
    "cloze": ("decoder", run_cloze),
    "qa": ("decoder", run_qa),
    "safety": ("decoder", run_safety),
    "summarize": ("decoder", run_summarize),
    "ppl": ("decoder", run_ppl),
    "classify": ("sequence_classifier", run_classify),
    "encoder": ("encoder", run_encoder),
}


def choose_suites(kind: str, suites) -> list[str]:
    """The suites to run on a checkpoint of `kind` (None = its default ones), each checked to apply to it."""
    if suites is None:
        if kind not in DEFAULT_SUITES:
            raise ConfigError(f"no evaluation suites for a {kind} checkpoint (suites exist for "
                              f"{', '.join(DEFAULT_SUITES)})")
        return DEFAULT_SUITES[kind]
    for name in suites:
        if name not in SUITES:
            raise ConfigError(f"eval.suites: unknown suite {name!r} (one of {', '.join(SUITES)})")
        if SUITES[name][0] != kind:
            raise ConfigError(f"eval.suites: the {name} suite evaluates a {SUITES[name][0]} checkpoint, "
                              f"not a {kind}")
    return list(suites)


def previous_sections(path: str, meta: dict) -> dict:
    """The suite sections of an eval.json already at `path`, if it was written for this same checkpoint."""
    if not storage.exists(path):
        return {}
    previous = storage.read_json(path)
    if (previous.get("step"), previous.get("stage")) != (meta.get("step"), meta.get("stage")):
        log.warning("%s was written for another checkpoint (step %s of %s): its sections are dropped", path,
                    previous.get("step"), previous.get("stage"))
        return {}
    return {name: section for name, section in previous.items() if name in SUITES}


def evaluate(cfg: DictConfig, checkpoint: str, *, shards: str | None = None, suites=None) -> dict:
    """Run `suites` (None = eval.suites, and null there = the checkpoint kind's default) on the checkpoint (or run
    directory) `checkpoint`; the encoder suite reads `shards` (None = the `shards` setting). Updates the
    checkpoint's eval.json with their sections and returns the whole report."""
    ckpt = checkpoints.load(checkpoint, setting="checkpoint")
    checkpoint, meta, kind = ckpt.path, ckpt.meta, ckpt.kind
    names = choose_suites(kind, suites if suites is not None else cfg.eval.suites)
    sections = {}
    for name in names:
        log.info("evaluating %s: %s", checkpoint, name)
        sections[name] = SUITES[name][1](cfg, ckpt, shards=shards or cfg.shards)
    path = storage.join(checkpoint, EVAL_FILE)
    report = {"checkpoint": checkpoint, "step": meta.get("step"), "stage": meta.get("stage"), "kind": kind,
              **previous_sections(path, meta), **sections}
    storage.write_json(path, report)
    return report


@stage_main("evaluate")
def main(cfg: DictConfig) -> None:
    report = evaluate(cfg, cfg.checkpoint)
    print_report(report, show=cfg.eval.show)
    print(f"report: {storage.join(report['checkpoint'], EVAL_FILE)}")


if __name__ == "__main__":
    main()
