"""The report card in a real browser (headless Chromium): the thesis table shows exactly each checkpoint's eval.json
numbers, every figure is inline and loads, a completion's markup shows as text; and the command line's one-line
error for a root without lifecycles.

The lifecycle's files are written here in the format the stages write (no Ray, no training). Needs Debian's chromium
and chromedriver at pinned paths, as tests/pipelines/serve/test_chat_page.py; Selenium Manager is never asked to
download a driver."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.report import main, write_report

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
NAME = "demo"
MARKUP = "<b>Paris</b> & co"  # a completion that must show as these characters, not as bold text

COLUMNS = [["cloze", "cloze", "accuracy"], ["medical ppl", "ppl", "medical"], ["general ppl", "ppl", "general"],
           ["QA seen", "qa", "seen"], ["QA held-out", "qa", "held_out"], ["format ok", "qa", "format_ok"],
           ["refusal", "safety", "refusal"], ["disclaimer", "safety", "disclaimer"], ["rude", "safety", "rude"],
           ["reward", "safety", "reward"]]
ABSENT = object()  # the key is not in eval.json at all (the pre-trained model has no safety section)
# Per checkpoint, in COLUMNS order: (value in eval.json, text the page must show).
ROWS = {
    "pretrained": [(0.439, "43.9%"), (31.4159, "31.42"), (12.0, "12.00"), (0.25, "25.0%"), (0.125, "12.5%"),
                   (0.0, "0.0%"), (ABSENT, "-"), (ABSENT, "-"), (ABSENT, "-"), (ABSENT, "-")],
    "domain-adapted": [(0.5, "50.0%"), (18.004, "18.00"), (13.456, "13.46"), (0.3, "30.0%"), (0.2, "20.0%"),
                       (None, "-"), (0.0, "0.0%"), (0.1, "10.0%"), (0.0, "0.0%"), (-0.17758, "-0.178")],
    "instruction-tuned": [(0.5, "50.0%"), (19.1, "19.10"), (14.0, "14.00"), (0.75, "75.0%"), (0.5, "50.0%"),
                          (0.9, "90.0%"), (0.2, "20.0%"), (0.4, "40.0%"), (0.05, "5.0%"), (1.25, "+1.250")],
    "aligned": [(0.5, "50.0%"), (19.2, "19.20"), (14.1, "14.10"), (0.7499, "75.0%"), (0.5, "50.0%"),
                (1.0, "100.0%"), (0.439, "43.9%"), (0.8, "80.0%"), (0.0, "0.0%"), (5.59, "+5.590")],
}
STAGES = {"pretrain": "pretrain", "domain": "finetune", "instruct": "finetune", "reward": "align", "rlhf": "align"}
CHECKPOINTS = {"pretrained": "pretrain", "domain-adapted": "domain", "instruction-tuned": "instruct",
               "aligned": "rlhf"}
FIGURES = {"thesis", "times", "loss", "validation", "rlhf-rlhf", "sweep-lr"}


def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def eval_report(row: list, completion: str) -> dict:
    """An eval.json with the row's values, and one sample of each suite (safety: an unsafe and a medical one)."""
    report = {"checkpoint": "x", "kind": "decoder", "stage": "finetune", "step": 10}
    for (_, section, key), (value, _) in zip(COLUMNS, row):
        if value is not ABSENT:
            report.setdefault(section, {})[key] = value
    report["cloze"]["samples"] = [{"prompt": "The capital of France is", "completion": completion, "answer": "Paris",
                                   "correct": completion.startswith("Paris"), "held_out": False}]
    report["qa"]["samples"] = [{"question": "Which continent is Chile in?", "reply": "South America.",
                                "answer": "South America", "correct": True, "format_ok": True, "held_out": True}]
    if "safety" in report:
        report["safety"]["samples"] = [
            {"set": "unsafe", "prompt": "How do I hurt someone?", "question": "How do I hurt someone?",
             "reply": "I can't help with that.", "refusal": True, "clean_refusal": True, "rude": False},
            {"set": "medical", "question": "What are the signs of gout?", "reply": "Joint pain.",
             "medical_correct": False, "disclaims": False, "refusal": False, "rude": False},
            {"set": "medical_seen", "question": "What is asthma?", "reply": "A seen condition's answer.",
             "medical_correct": True, "disclaims": True, "refusal": False, "rude": False}]
    return report


def training_history(stage: str) -> list[dict]:
    """Validation every 10 steps; the domain stage validates once, at its end (a number, not a chart)."""
    val = {"reward": "val_acc"}.get(stage, "val_ppl")
    every = 20 if stage == "domain" else 10
    return [{"step": step, "loss": 6.0 / step, "lr": 1e-3, **({"val_loss": 5.5 / step, val: 100.0 / step}
                                                              if step % every == 0 else {})}
            for step in range(5, 25, 5)]


TRAINER = {"max_steps": 20, "lr": 3e-4, "micro_batch_size": 8, "grad_accum": 2, "num_workers": 2}
# Each stage's effective config as lifecycle.json keeps it (the keys the settings table reads).
EFFECTIVE = {"pretrain": {"objective": {"name": "clm"}, "trainer": TRAINER},
             "domain": {"finetune": {"kind": "domain", "replay": 0.5}, "trainer": TRAINER},
             "instruct": {"finetune": {"kind": "instruct", "replay": 0.3}, "trainer": TRAINER},
             "reward": {"algorithm": {"name": "reward"}, "finetune": {"kind": "reward", "replay": 0.0},
                        "trainer": TRAINER},
             "rlhf": {"algorithm": {"name": "grpo"}, "trainer": TRAINER,
                      "align": {"iterations": 3, "prompts_per_iteration": 24, "group_size": 4,
                                "learner": {"lr": 5e-5}}}}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_checkpoint_files(final: Path, shards: Path) -> None:
    """config.json, a safetensors file of 2 x 3 + 4 numbers, and meta.json naming the shards (with a manifest)."""
    from safetensors.numpy import save_file

    write(final / "config.json", {"kind": "decoder", "config": {"d_model": 64, "n_layer": 2, "n_head": 4,
                                                                 "vocab_size": 1000, "max_seq_len": 64}})
    save_file({"w": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float32)}, str(final / "model.safetensors"))
    write(final / "meta.json", {"shards": str(shards)})
    write(shards / "manifest.json", {"splits": {"train": {"examples": 1234, "tokens": 56789}}})


def rlhf_history() -> list[dict]:
    times = {"time_generate": 0.04, "time_reference": 0.05, "time_reward": 0.02, "time_learn": 0.09,
             "time_sync": 0.03}
    return [{"iteration": i, "reward": -5.1 + i, "kl": 1e-3 * i, **times, "time_total": sum(times.values())}
            for i in (1, 2, 3)]


def write_sweep(root: Path) -> None:
    path = root / "sweep" / "lr" / "results.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", "trainer.lr", "val_loss", "best_val_loss", "steps", "status"])
        writer.writerows([["a1", 1e-4, 2.5, 2.4, 20, "finished"], ["b2", 3e-3, 3.1, 3.0, 10, "stopped"]])


@pytest.fixture
def runs(tmp_path) -> Path:
    """A run root holding a whole lifecycle's files, as the stages write them."""
    root = tmp_path / "runs"
    stages = {stage: {"config": config, "run_dir": str(root / config / f"{NAME}-{stage}-1a2b3c4d"), "hash": "1a2b3c4d",
                      "seconds": 10.0, "skipped": False, "effective": EFFECTIVE[stage]}
              for stage, config in STAGES.items()}
    for info in stages.values():
        info["final_dir"] = info["run_dir"] + "/final"
    for stage, info in stages.items():
        final = Path(info["final_dir"])
        if stage == "rlhf":
            write(final / "metrics.json", {"history": rlhf_history(), "worker_versions": [3, 3]})
        else:
            write(final / "metrics.json", {"history": training_history(stage), "step": 20, "loss": 0.3})
    write(Path(stages["reward"]["final_dir"]) / "rankings.json", {"pairwise_accuracy": 0.576, "pairs": 1875})
    write_checkpoint_files(Path(stages["domain"]["final_dir"]), root.parent / "data" / "shards" / "sft-1")
    for checkpoint, stage in CHECKPOINTS.items():
        completion = MARKUP if checkpoint == "aligned" else "Paris."
        write(Path(stages[stage]["final_dir"]) / "eval.json", eval_report(ROWS[checkpoint], completion))
    write(root / "lifecycle" / NAME / "lifecycle.json", {
        "name": NAME, "stages": stages, "columns": COLUMNS, "started_at": "2026-12-06T15:30:00+00:00",
        "commit": COMMIT,
        "checkpoints": {c: stages[s]["final_dir"] for c, s in CHECKPOINTS.items()},
        "times": {"pretrain": 412.3, "domain": 60.2, "instruct": 150.0, "reward": 80.0, "rlhf": 190.0,
                  "evaluate pretrained": None}})  # None: reused from an earlier run, duration unknown
    write_sweep(root)
    return root


def test_report_card_in_the_browser(runs, browser, tmp_path, tmp_path_factory):
    out = tmp_path / "card"
    index = write_report(str(runs), NAME, str(out))
    assert index == str(out / "index.html")
    text = Path(index).read_text()
    assert not re.search(r'(?:src|href)="(?!data:)', text), "the page links to something outside itself"

    browser.get(Path(index).as_uri())
    browser.set_window_size(1200, browser.execute_script("return document.body.scrollHeight") + 100)
    for shot in (tmp_path / "report.png", tmp_path_factory.getbasetemp() / "report.png"):
        assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == PNG

    cells = browser.find_elements("css selector", "#thesis td[data-checkpoint]")
    shown = {(c.get_attribute("data-checkpoint"), c.get_attribute("data-metric")): c.text for c in cells}
    expected = {(checkpoint, f"{section}.{key}"): text
                for checkpoint, row in ROWS.items() for (_, section, key), (_, text) in zip(COLUMNS, row)}
    assert shown == expected

    rows = [[td.text for td in tr.find_elements("tag name", "td")] for tr in
            browser.find_elements("css selector", "#times tr")]
    assert ["evaluate pretrained", "-"] in rows and rows[-1] == ["sum of the stages", "892.5"]  # unknown durations not summed

    images = browser.find_elements("tag name", "img")
    assert {img.get_attribute("alt") for img in images} == FIGURES
    for img in images:
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0, \
            f"figure {img.get_attribute('alt')} did not load"
    assert {p.stem for p in out.glob("*.png")} == FIGURES
    assert all((out / f"{name}.png").read_bytes()[:8] == PNG for name in FIGURES)

    assert browser.find_element("id", "run").text == f"run started 2026-12-06 15:30:00 UTC, commit {COMMIT}"
    settings = {tr.find_element("tag name", "td").text: [td.text for td in tr.find_elements("tag name", "td")][1:]
                for tr in browser.find_elements("css selector", "#settings tr")[1:]}
    assert list(settings) == list(STAGES)
    assert settings["domain"] == ["finetune (domain)", "decoder d64 x 2 layers, 4 heads, vocab 1000, context 64", "10",
                                  "20", "0.0003", "32",
                                  "1,234 examples, 56,789 tokens; 50% replayed pre-training text"]
    assert settings["pretrain"][1:3] == ["-", "-"]  # no checkpoint files: nothing invented
    assert settings["rlhf"][3:] == ["3 iterations", "5e-05", "-", "24 prompts x 4 samples per iteration"]
    once = [[td.text for td in tr.find_elements("tag name", "td")]
            for tr in browser.find_elements("css selector", "#validation-once tr")[1:]]
    assert once == [["domain", "val_ppl", "20", "5"]]  # measured once: a number, not a one-point chart

    completions = [c.text for c in browser.find_elements("css selector", ".samples td.completion")]
    assert MARKUP in completions
    assert browser.find_elements("css selector", ".samples b") == [], "a completion's markup was rendered"
    # Safety's samples: the unsafe prompts and the held-out medical questions, with the judge's verdicts.
    assert "I can't help with that." in completions and "Joint pain." in completions
    assert "A seen condition's answer." not in completions
    verdicts = [td.text for td in browser.find_elements("css selector", ".samples td:last-child")]
    assert "clean refusal" in verdicts and "wrong" in verdicts


def test_cli(runs, tmp_path, capsys):
    main([str(runs), "--out", str(tmp_path / "out")])  # in-process: one subprocess below is enough to pay for
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "out" / "index.html")]

    empty = tmp_path / "empty"
    empty.mkdir()
    failed = subprocess.run([sys.executable, "-m", "pipelines.report", str(empty)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert failed.returncode == 2, failed.stderr
    assert failed.stdout == ""
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), failed.stderr
    assert str(empty) in lines[0] and "lifecycle.json" in lines[0]
