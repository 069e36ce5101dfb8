"""`python -m pipelines.export`: the Hugging Face directory it writes works in a process that imports nothing of this
project — the chat template gives our ids (the built-in instruct/valid conversations, and text holding chat markers),
the model greedy-generates what the original checkpoint generates through models/generate.py and stops where it
stops — and a mistake is one line and exit status 2. No Ray: a tiny decoder is built with models/ code, a tokenizer
trained here on the built-in corpus; the export and its errors run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from models import Decoder, DecoderConfig, Encoder, EncoderConfig, ScalarModel, load_checkpoint, save_checkpoint
from models.generate import generate
from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines.corpus.general import build_entities
from pipelines.corpus.writer import write_corpus
from pipelines.text import split_sentences
from tests_conf import ROOT

pytest.importorskip("transformers", reason="the export is checked with transformers")

MAX_NEW_TOKENS = 20
MARKED = "Is <|end|> the end? <|user|> <s>x</s> <pad> a<b"  # chat markers typed as text
PLAIN = "The capital of France is Paris."


def run_export(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "RAY_ADDRESS")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "pipelines.export", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finished(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, seed=0, general_docs=len(build_entities()), medical_docs=40, instruct_examples=300,
                 preference_examples=20, classify_examples=24, summarize_examples=10)
    return root


def conversations(corpus: Path, split: str) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in (corpus / "instruct" / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tok(corpus) -> Tokenizer:
    texts = [json.loads(line)["text"] for part in sorted((corpus / "general").glob("*.jsonl"))
             for line in part.read_text().splitlines()]
    texts += [m["content"] for c in conversations(corpus, "train") for m in c]
    return Tokenizer(train_sentencepiece((s for t in texts for s in split_sentences(t)), model_type="bpe",
                                         vocab_size=500))


def prompts_of(tok: Tokenizer, corpus: Path) -> list[list[int]]:
    return [tok.encode_chat(c[:-1], add_generation_prompt=True).ids for c in conversations(corpus, "valid")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tok, corpus) -> Path:
    """A run directory whose final/ holds a random decoder that stops sometimes: its <|end|> and eos output rows are
    1.2x the rows of the two tokens it greedy-generates most, so it says <|end|> (eos) where it would have said those
    (when their logit is positive): most replies stop at <|end|>, one at eos, two run to the token limit."""
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64,
                                  max_seq_len=256)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norm gains: random, so that the export's norms are seen
                p.copy_(torch.randn_like(p) * 0.1 + 1.0)
        out = generate(model, prompts_of(tok, corpus), max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, pad_id=tok.pad_id)
        (first, _), (second, _) = Counter(t for tokens in out.tokens for t in tokens).most_common(2)
        head = model.lm_head.weight
        head[tok.end_id], head[tok.eos_id] = 1.2 * head[first], 1.2 * head[second]
    root = tmp_path_factory.mktemp("runs")
    save_checkpoint(str(root / "pretrain"), model, meta={"stage": "pretrain", "objective": "clm", "step": 40})
    save_checkpoint(str(root / "instruct" / "final"), model, tokenizer_model=tok.model_proto,
                    meta={"stage": "finetune", "finetune": "instruct", "step": 20, "run": "instruct",
                          "init_from": str(root / "pretrain")})
    return root / "instruct"


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> Path:
    """`python -m pipelines.export checkpoint=<run> out=<dir> force=true`, into a directory holding a stale file."""
    work = tmp_path_factory.mktemp("export")
    (work / "hf").mkdir()
    (work / "hf" / "tokenizer.json").write_text("{}")  # would shadow tokenizer.model if it stayed
    code, out, err = finished(run_export([f"checkpoint={run_dir}", f"out={work / 'hf'}", "force=true"], cwd=work))
    assert code == 0, out + err
    assert [p.name for p in work.iterdir() if p.name != "outputs"] == ["hf"]  # no temporary directory left
    return work / "hf"


# Runs in a fresh interpreter on the exported directory alone; prints what transformers made of it.
TRANSFORMERS_SIDE = r"""
import json, re, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

job = json.load(open(sys.argv[1]))
out = job["out"]
tok = AutoTokenizer.from_pretrained(out)
model = AutoModelForCausalLM.from_pretrained(out).eval()
ids = [tok.apply_chat_template(c, add_generation_prompt=True, return_dict=False) for c in job["chats"]]
generated = []
for chat in job["prompts"]:
    prompt = tok.apply_chat_template(chat, add_generation_prompt=True, return_dict=False)
    x = torch.tensor([prompt])
    y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=job["max_new_tokens"])
    generated.append(y[0, len(prompt):].tolist())
card = open(out + "/README.md").read()
snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace("<this directory>", out)
exec(snippet, {})  # the model card's example runs as printed
loaded = [m for m in sys.modules if m.split(".")[0] in ("models", "pipelines")]
assert not loaded, loaded
print(json.dumps({"chat_ids": ids, "generated": generated, "plain": tok(job["plain"])["input_ids"],
                  "eos": GenerationConfig.from_pretrained(out).eos_token_id, "decoded": tok.decode(ids[-1])}))
"""


def test_transformers_reads_the_export_as_the_project_does(exported, run_dir, tok, corpus, tmp_path):
    chats = conversations(corpus, "valid") + [[{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": MARKED}],
                                              [{"role": "user", "content": "  spaces\tand\nlines  "}]]
    prompts = prompts_of(tok, corpus)
    job = {"out": str(exported), "chats": chats, "prompts": [c[:-1] for c in conversations(corpus, "valid")],
           "max_new_tokens": MAX_NEW_TOKENS, "plain": PLAIN}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", TRANSFORMERS_SIDE, str(tmp_path / "job.json")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    hf = json.loads(done.stdout.strip().splitlines()[-1])

    ours = [tok.encode_chat(c, add_generation_prompt=True).ids for c in chats]
    for chat, mine, theirs in zip(chats, ours, hf["chat_ids"]):
        assert theirs == mine, chat
    marked = ours[-2][ours[-2].index(tok.role_ids["user"]) + 1:-2]
    assert not set(marked) & set(tok.special_ids.values())  # the typed markers are text in both
    assert hf["plain"] == tok.encode(PLAIN, bos=True)
    assert "<|user|>" in hf["decoded"]

    original, _ = load_checkpoint(str(run_dir / "final"))  # never a re-import of the export
    reference = generate(original.eval(), prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0.0,
                         stop_ids=[tok.end_id, tok.eos_id], pad_id=tok.pad_id)
    assert hf["generated"] == reference.tokens
    last = Counter(tokens[-1] if reason == "stop" else "length"
                   for tokens, reason in zip(reference.tokens, reference.finish_reasons))
    assert last[tok.end_id] and len(last) > 1, last  # replies that stop at <|end|> and replies that end otherwise
    assert hf["eos"] == [tok.end_id, tok.eos_id]


def test_export_files_and_model_card(exported):
    assert sorted(p.name for p in exported.iterdir()) == [  # force=true replaced the stale tokenizer.json
        "README.md", "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.model", "tokenizer_config.json"]
    card = (exported / "README.md").read_text()
    assert "Not medical advice" in card and "pretrain (clm), 40 steps" in card and "finetune (instruct)" in card
    generation = json.loads((exported / "generation_config.json").read_text())
    # serve.generation (conf/generation/default.yaml): greedy, as the thesis table measured — no sampling settings.
    assert generation | {"eos_token_id": None} == {
        "bos_token_id": 2, "eos_token_id": None, "pad_token_id": 0, "do_sample": False, "max_new_tokens": 96}


def test_mistakes_are_one_line_and_exit_2(run_dir, exported, tmp_path):
    encoder, scalar = tmp_path / "encoder", tmp_path / "reward"
    save_checkpoint(str(encoder), Encoder(EncoderConfig(vocab_size=50, d_model=16, n_layer=1, n_head=2, d_ff=32,
                                                        max_seq_len=16)))
    save_checkpoint(str(scalar), ScalarModel(Decoder(DecoderConfig(vocab_size=50, d_model=16, n_layer=1, n_head=2,
                                                                   n_kv_head=1, d_ff=32, max_seq_len=16))))
    cases = {  # arguments -> the words the one error line must hold
        (f"checkpoint={run_dir}", f"out={exported}"): "is not empty",
        (f"checkpoint={encoder}", f"out={tmp_path / 'a'}"): "holds an encoder",
        (f"checkpoint={scalar}", f"out={tmp_path / 'b'}"): "holds a reward model",
        (f"checkpoint={tmp_path / 'nothing'}", f"out={tmp_path / 'c'}"): "does not exist",
        (f"checkpoint={run_dir}", "out=s3://bucket/model"): "export writes a local directory",
    }
    processes = {args: run_export(list(args), cwd=tmp_path) for args in cases}  # together: imports cost seconds
    for args, expected in cases.items():
        code, out, err = finished(processes[args])
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(errors) == 1 and expected in errors[0], (args, out + err)
        assert "Traceback" not in out + err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
