"""Candidate cases for the judge's fixture: replies sampled from a real checkpoint, to be labelled by hand.

    python tests/pipelines/evaluate/sample_judge_cases.py runs/finetune/<run>/final --tag instruct \
        --eval-dir <data root>/corpus/builtin-<hash>/eval --out /tmp/candidates.jsonl

Held-out unsafe prompts, held-out medical questions and held-out QA questions, drawn with a fixed seed, each
answered greedily and at temperature 1 (fixed seed). Every reply becomes one line per judgement it needs (unsafe:
refusal and rude; medical: medical_correct, disclaims, refusal and rude; QA: qa_correct and rude) with "label"
(and for refusals "clean") set to null: read each reply, set them, then append the lines to judge_cases.jsonl.
Never label them with the judge.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from models.generate import generate
from pipelines import checkpoints


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def candidates(item: dict, reply: str, source: str) -> list[dict]:
    base = {"reply": reply, "label": None, "source": source, "note": ""}
    if item["set"] == "unsafe":
        context = {"prompt": item["prompt"], "category": item["category"]}
        return [{"judgement": "refusal", **base, **context, "clean": None}, {"judgement": "rude", **base, **context}]
    if item["set"] == "medical":
        q = item["question"]
        return [{"judgement": "medical_correct", **base, "question": q, "condition": item["condition"],
                 "kind": item["kind"]}, {"judgement": "disclaims", **base, "question": q},
                {"judgement": "refusal", **base, "prompt": q, "clean": None},
                {"judgement": "rude", **base, "prompt": q}]
    return [{"judgement": "qa_correct", **base, "question": item["question"], "answer": item["answer"],
             "entity": item["entity"]}, {"judgement": "rude", **base, "prompt": item["question"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--tag", required=True, help="names the checkpoint in each case's source, sampled:<tag>")
    parser.add_argument("--eval-dir", required=True, type=Path, help="the built-in corpus's eval/ folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--per-set", type=int, nargs=3, default=(10, 12, 8), metavar=("UNSAFE", "MEDICAL", "QA"))
    parser.add_argument("--max-new-tokens", type=int, default=96, help="at most; less where the context is full")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    items = []
    for name, count in zip(("unsafe", "medical", "qa"), args.per_set):
        held_out = [x for x in read(args.eval_dir / f"{name}.jsonl") if x["held_out"]]
        items += [{**x, "set": name, "question": x.get("question", x.get("prompt"))}
                  for x in rng.sample(held_out, count)]
    ckpt = checkpoints.load(args.checkpoint)
    tok, model = ckpt.tok, ckpt.model.eval()
    prompts = [tok.encode_chat([{"role": "user", "content": x["question"]}], add_generation_prompt=True).ids
               for x in items]
    # Room for the reply within the context, as the safety suite leaves it.
    max_new_tokens = min(args.max_new_tokens, model.cfg.max_seq_len - max(map(len, prompts)))
    lines = []
    for temperature, seed, suffix in ((0.0, None, ""), (1.0, args.seed, f"@T1-seed{args.seed}")):
        with torch.no_grad():
            out = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                           stop_ids=tok.stop_ids, pad_id=tok.pad_id, seed=seed)
        for item, tokens, reason in zip(items, out.tokens, out.finish_reasons):
            reply = tok.decode(tokens[:-1] if reason == "stop" else tokens).strip()
            lines += candidates(item, reply, f"sampled:{args.tag}{suffix}")
    args.out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    print(f"{len(lines)} candidate cases ({len(items) * 2} replies) -> {args.out}: label them by hand")


if __name__ == "__main__":
    main()
