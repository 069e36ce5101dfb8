"""The evaluation stage: scoring rules, and every in-process suite run on tiny random checkpoints (the runs on
trained models, and the ppl suite on Ray, are in test_pretrain.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models import ScalarModel, SequenceClassifier, build_model, load_checkpoint, save_checkpoint
from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines.errors import ConfigError
from pipelines.evaluate import evaluate
from pipelines.evaluate import judge
from pipelines.evaluate.cloze import answer_matches
from pipelines.evaluate.ppl import ppl_shards_config
from pipelines.evaluate.qa import answer_in_reply, baseline, format_ok, most_common_answers
from pipelines.evaluate.report import print_report
from pipelines.evaluate.summarize import summary_prompt
from pipelines.text import split_sentences

CORPUS = ["data.general_docs=1000", "data.medical_docs=50"]


@pytest.mark.parametrize("completion,answer", [
    ("Paris.", "Paris"), ("Paris", "Paris"), ("Paris, the capital", "Paris"), ("2. It is even.", "2"),
    ("H.", "H"), ("metal. It is", "metal"), ("New York City.", "New York City"), ("4!", "4"),
])
def test_a_whole_word_answer_counts(completion, answer):
    assert answer_matches(completion, answer)


@pytest.mark.parametrize("completion,answer", [
    # The review's cases: an answer that prefixes another answer of the same relation.
    ("metalloid.", "metal"), ("He.", "H"), ("26.", "2"), ("46.", "4"),
    ("2.5 is not", "2"), ("Parisian", "Paris"), ("The answer is Paris", "Paris"), ("", "Paris"),
])
def test_a_prefix_of_another_word_does_not(completion, answer):
    assert not answer_matches(completion, answer)


def test_the_built_in_answers_that_prefix_each_other_are_told_apart(corpus):
    """Every pair of built-in cloze answers of one relation where one prefixes the other inside a word (96 items
    have an answer that prefixes another; "Europe" / "Europe and Asia" is a whole-word prefix and still counts, as
    a word-boundary rule says): the rival's completion never scores for the shorter answer."""
    items = [json.loads(line) for line in (corpus / "eval" / "cloze.jsonl").read_text().splitlines()]
    answers: dict[str, set[str]] = {}
    for item in items:
        answers.setdefault(item["relation"], set()).add(item["answer"])
    rivals = [(a, b) for values in answers.values() for a in values for b in values
              if a != b and b.startswith(a) and b[len(a)].isalnum()]
    assert len(rivals) >= 10, rivals
    for short, rival in rivals:
        assert not answer_matches(rival + ".", short), (rival, short)
        assert answer_matches(short + ". " + rival, short)
        assert not answer_in_reply(f"It is {rival}.", short) and answer_in_reply(f"It is {short}.", short)


@pytest.mark.parametrize("reply,answer", [
    ("The capital of France is Paris.", "Paris"), ("Paris", "Paris"), ("paris!", "Paris"), ("(Paris)", "Paris"),
    ("It is in  South\nAmerica.", "South America"), ("The number after 25 is 26.", "26"), ("It is 2.", "2"),
    ("Its symbol is H, for hydrogen.", "H"), ("It is in Europe and Asia.", "Europe"),
])
def test_the_answer_anywhere_in_a_reply_counts(reply, answer):
    assert answer_in_reply(reply, answer)


@pytest.mark.parametrize("reply,answer", [
    ("Parisian food is good.", "Paris"), ("It is 26.", "2"), ("It is 2.5 or so.", "2"), ("Its symbol is He.", "H"),
    ("It is a metalloid.", "metal"), ("Southern America.", "South America"), ("", "Paris"), ("12", "2"),
])
def test_an_answer_inside_another_word_does_not(reply, answer):
    assert not answer_in_reply(reply, answer)


@pytest.mark.parametrize("reply,ended,ok", [
    ("The capital of France is Paris.", True, True), ("26 is even!", True, True), (" Is it Paris? ", True, True),
    ("The capital of France is Paris.", False, False),  # cut off by max_new_tokens or ended by eos
    ("the capital of France is Paris.", True, False), ("The capital of France is Paris", True, False),
    ("Paris. The", True, False), ("", True, False), ("...", True, False),
])
def test_a_well_formed_reply_is_one_sentence_closed_by_end(reply, ended, ok):
    assert format_ok(reply, ended=ended) is ok


def test_the_baseline_answers_each_relation_with_its_most_common_answer():
    items = [{"relation": "continent", "answer": a, "held_out": h} for a, h in
             [("Europe", False), ("Asia", False), ("Europe", False), ("Africa", True), ("Europe", True)]]
    items += [{"relation": "parity", "answer": a, "held_out": False} for a in ("odd", "even", "even")]
    guesses = most_common_answers(items)
    assert guesses == {"continent": "Europe", "parity": "even"}
    # Seen: Europe, Asia, Europe, odd, even, even -> 4 of 6; held-out: Africa, Europe -> 1 of 2.
    assert baseline(items, guesses) == {"baseline_seen": pytest.approx(4 / 6), "baseline_held_out": 0.5}
    assert most_common_answers([{"relation": "r", "answer": "b"}, {"relation": "r", "answer": "a"}]) == {"r": "b"}


# ---- suites on tiny random checkpoints ----

@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("evaluate")


@pytest.fixture(scope="module")
def corpus(root, compose_config) -> Path:
    """The built-in corpus where the evaluate config looks for it (generated once)."""
    from pipelines.data.build import builtin_corpus

    return Path(builtin_corpus(compose_config("evaluate", [f"data.root={root}", *CORPUS, "checkpoint=x"]).data))


@pytest.fixture(scope="module")
def tokenizer_model(corpus) -> bytes:
    texts = [json.loads(line)["text"] for path in sorted((corpus / "general").glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    return train_sentencepiece((s for text in texts for s in split_sentences(text)), model_type="bpe",
                               vocab_size=400)


def vocab_size(tokenizer_model: bytes) -> int:
    return Tokenizer(tokenizer_model).vocab_size


@pytest.fixture(scope="module")
def decoder_dir(root, tokenizer_model) -> Path:
    torch.manual_seed(0)
    model = build_model({"kind": "decoder", "vocab_size": vocab_size(tokenizer_model), "d_model": 32, "n_layer": 1,
                         "n_head": 2, "n_kv_head": 1, "d_ff": 64, "max_seq_len": 256})
    path = root / "decoder"
    save_checkpoint(str(path), model, tokenizer_model=tokenizer_model, meta={"stage": "pretrain", "step": 7})
    return path


@pytest.fixture(scope="module")
def qa_file(root, corpus) -> Path:
    """Six seen and six held-out questions of the built-in QA set."""
    items = [json.loads(line) for line in (corpus / "eval" / "qa.jsonl").read_text().splitlines()]
    chosen = [i for i in items if not i["held_out"]][:6] + [i for i in items if i["held_out"]][:6]
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in chosen))
    return path


def eval_config(compose_config, root, checkpoint, extra=()):
    return compose_config("evaluate", [f"data.root={root}", *CORPUS, f"checkpoint={checkpoint}", "eval.batch_size=8",
                                       *extra])


def in_unit_range(value) -> bool:
    return value is not None and 0.0 <= value <= 1.0


def test_a_second_run_adds_its_suites_to_the_report_and_keeps_the_others(compose_config, root, decoder_dir,
                                                                          qa_file, capsys):
    cfg = eval_config(compose_config, root, decoder_dir, [
        "eval.cloze_limit=8", "eval.samples=5", f"eval.qa_path={qa_file}", "eval.qa_max_new_tokens=12",
        "eval.summarize_limit=3", "eval.summarize_max_new_tokens=16"])
    first = evaluate(cfg, cfg.checkpoint, suites=["cloze"])
    assert (first["kind"], first["stage"], first["step"]) == ("decoder", "pretrain", 7)
    cloze = first["cloze"]
    assert cloze["count"] == 8 and len(cloze["samples"]) == 5
    assert all(in_unit_range(cloze[k]) for k in ("accuracy", "seen", "held_out"))
    assert [s["correct"] for s in cloze["samples"]] == [answer_matches(s["completion"], s["answer"])
                                                        for s in cloze["samples"]]

    report = evaluate(cfg, cfg.checkpoint, suites=["qa", "summarize"])
    assert json.loads((decoder_dir / "eval.json").read_text()) == report
    assert report["cloze"] == cloze  # kept from the first run
    qa = report["qa"]
    assert qa["count"] == 12 and qa["skipped"] == 0 and len(qa["samples"]) == 5
    rates = ["seen", "held_out", "format_ok", "plain_held_out", "baseline_seen", "baseline_held_out"]
    assert all(in_unit_range(qa[k]) for k in rates), qa
    assert qa["per_relation"] and all(in_unit_range(v) for v in qa["per_relation"].values())
    assert len(qa["plain_samples"]) == 5 and all(s["held_out"] for s in qa["plain_samples"])
    # Correct is the judge's verdict (the answer in a sentence about the asked subject), and says which rule decided.
    assert [(s["correct"], s["rule"]) for s in qa["samples"]] == [
        tuple(judge.qa_correct(s["reply"], s["question"], s["answer"], s["entity"])) for s in qa["samples"]]
    summary = report["summarize"]
    assert summary["count"] == 3 and 0 <= summary["truncated"] <= 3
    assert in_unit_range(summary["rougeL"]) and {"reply", "summary", "rougeL"} <= set(summary["samples"][0])

    print_report(report, show=2)
    out = capsys.readouterr().out
    assert all(word in out for word in ("cloze", "qa", "guess", "summarize", "ROUGE-L")), out


def test_a_document_too_long_for_the_model_is_cut_to_leave_room_for_the_summary(tokenizer_model):
    tok = Tokenizer(tokenizer_model)
    document = " ".join(f"The number {n} is {'even' if n % 2 == 0 else 'odd'}." for n in range(40))
    whole, cut = summary_prompt(tok, document, 1000)
    assert not cut and tok.decode(whole).endswith("The number 39 is odd.")
    short, cut = summary_prompt(tok, document, 40)
    assert cut and len(short) <= 40 and short[-2:] == whole[-2:] == [tok.end_id, tok.role_ids["assistant"]]
    assert short[:-3] == whole[:len(short) - 3]  # <bos> <|user|> instruction, the start of the document
    with pytest.raises(ConfigError, match="instruction alone"):
        summary_prompt(tok, document, 5)


def test_a_suite_for_another_kind_of_model_is_refused(compose_config, root, decoder_dir):
    cfg = eval_config(compose_config, root, decoder_dir)
    with pytest.raises(ConfigError, match="classify suite evaluates a sequence_classifier checkpoint, not a decoder"):
        evaluate(cfg, cfg.checkpoint, suites=["cloze", "classify"])
    with pytest.raises(ConfigError, match="unknown suite 'bleu'"):
        evaluate(compose_config("evaluate", [f"checkpoint={decoder_dir}", "eval.suites=[bleu]"]), str(decoder_dir))


def test_the_classify_suite_scores_the_labels_the_checkpoint_knows(compose_config, root, corpus, tokenizer_model):
    torch.manual_seed(0)
    encoder = build_model({"kind": "encoder", "vocab_size": vocab_size(tokenizer_model), "d_model": 32,
                           "n_layer": 1, "n_head": 2, "d_ff": 64, "max_seq_len": 32})
    labels = ["geography", "chemistry", "animals"]
    path = root / "classifier"
    save_checkpoint(str(path), SequenceClassifier(encoder, len(labels)), tokenizer_model=tokenizer_model,
                    meta={"stage": "finetune", "step": 3, "labels": labels, "seq_len": 32})
    cfg = eval_config(compose_config, root, path)
    report = evaluate(cfg, cfg.checkpoint)  # eval.suites=null: a classifier's default suite
    tests = [json.loads(line) for line in (corpus / "task" / "classify_test.jsonl").read_text().splitlines()]
    known = sum(t["label"] in labels for t in tests)
    assert report["classify"]["count"] == known and report["classify"]["skipped"] == len(tests) - known > 0
    assert in_unit_range(report["classify"]["accuracy"])


def test_the_ppl_suite_tokenizes_documents_with_the_checkpoints_tokenizer(compose_config, root):
    cfg = eval_config(compose_config, root, "x", ["objective=mlm_nsp"])
    data_cfg = ppl_shards_config(cfg, "medical", "/ckpt/tokenizer.model")
    assert (data_cfg.data.subset, data_cfg.data.record, data_cfg.tokenizer.path, data_cfg.force) == (
        "medical", "text", "/ckpt/tokenizer.model", False)
    assert dict(data_cfg.objective) == {"name": "clm", "shard_format": "clm"}
    assert (cfg.data.subset, cfg.tokenizer.path, cfg.objective.name) == ("general", None, "mlm_nsp")  # untouched


def test_the_safety_suite_asks_held_out_prompts_only_and_scores_replies_with_a_reward_model(
        compose_config, root, corpus, decoder_dir, tokenizer_model, capsys):
    torch.manual_seed(1)
    reward = ScalarModel(build_model({"kind": "decoder", "vocab_size": vocab_size(tokenizer_model), "d_model": 16,
                                      "n_layer": 1, "n_head": 2, "n_kv_head": 1, "d_ff": 32,
                                      "max_seq_len": 256}))
    save_checkpoint(str(root / "reward"), reward, tokenizer_model=tokenizer_model, meta={"stage": "align"})
    cfg = eval_config(compose_config, root, decoder_dir, ["eval.safety_limit=5", "eval.safety_max_new_tokens=8",
                                                          "eval.medical_seen_limit=3",
                                                          f"eval.reward_model={root / 'reward'}"])
    section = evaluate(cfg, cfg.checkpoint, suites=["safety"])["safety"]
    held_unsafe = [(u["prompt"], u["held_out_by"]) for u in map(json.loads, (corpus / "eval" / "unsafe.jsonl")
                                                                         .read_text().splitlines()) if u["held_out"]]
    held_by_action = [p for p, by in held_unsafe if by == "action"]
    assert section["medical_count"] == 5 and section["skipped"] == 0
    assert section["unsafe_count"] + section["framing_count"] == 5 and section["medical_seen_count"] == 3
    samples = [s for s in section["samples"] if s["set"] != "medical_seen"]
    assert [s["prompt"] for s in samples if s["set"] == "unsafe" and s["held_out_by"] == "action"] == [
        p for p, _ in held_unsafe[:5] if p in held_by_action]
    assert all(s["held_out"] for s in samples)
    rates = ("refusal", "refusal_framing", "medical_correct", "medical_correct_seen", "disclaimer",
             "safe_and_helpful", "over_refusal", "rude")
    assert all(in_unit_range(section[k]) for k in rates), section
    # Every sample carries the judge's verdicts and the rule that decided each (never the reward's detectors).
    for s in samples:
        assert s["rules"] and {k: s[k] for k in s["rules"]} == {
            k: v for k, v in judge.verdicts(s, s["reply"]).items() if k in s["rules"]}
    # The suite's mean reward is what the RLHF reward role pays for the same greedy replies: the generated tokens
    # scored, and a reply cut off at 8 tokens losing the unfinished penalty (not re-encoded with <|end|> added).
    from models.generate import generate
    from pipelines.align.reward import RewardScorer

    tok = Tokenizer(tokenizer_model)
    policy, _ = load_checkpoint(decoder_dir)
    prompts = [tok.encode_chat([{"role": "user", "content": s["question"]}], add_generation_prompt=True).ids
               for s in samples]
    assert len(samples) == 10  # every reply the mean is over (samples keep up to eval.samples of each set)
    out = generate(policy.eval(), prompts, max_new_tokens=8, temperature=0.0, stop_ids=tok.stop_ids,
                   pad_id=tok.pad_id)
    expected = RewardScorer(str(root / "reward")).score(prompts, out.tokens)
    assert any(not tok.finished(t) for t in out.tokens)  # the unfinished term is exercised
    assert section["reward"] == pytest.approx(sum(expected) / len(expected), abs=1e-4)
    print_report(evaluate(cfg, cfg.checkpoint, suites=["safety"]), show=1)
    assert "refusal" in capsys.readouterr().out
