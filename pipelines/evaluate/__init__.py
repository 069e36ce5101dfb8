"""Evaluation: `python -m pipelines.evaluate checkpoint=runs/pretrain/<run> [eval.suites=[cloze,qa]]`.

One module per suite (cloze.py, qa.py, safety.py, summarize.py, ppl.py, classify.py, encoder.py), what they share
(common.py: batched greedy generation under the one stop rule, prompts, rates), the printed report (report.py) and
`evaluate`, which runs the suites a checkpoint's kind allows and writes eval.json. No reward function is used to
judge: the judgements are the evaluation's own.

What does the model know, and can it do what it was fine-tuned for? An evaluation runs suites, each for one kind
of checkpoint; `eval.suites` names them (null = by kind: decoder -> cloze, qa; sequence_classifier -> classify;
encoder -> encoder):

- `cloze` (decoder): greedy completions of the built-in facts' cloze prompts ("The capital of France is" ->
  "Paris"), correct when the completion starts with the answer as a whole word (`answer_matches`). Held-out
  entities (whose facts appear only in the pre-training corpus) are reported apart: later stages compare on them.
- `qa` (decoder): each question asked through the chat template, correct when the reply holds the answer as a
  whole word in a sentence about the asked subject (the judge, `judge.qa_correct`); `format_ok` when the reply is one sentence closed by <|end|>. The held-out
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

import logging
from typing import Callable

from omegaconf import DictConfig

from pipelines import checkpoints, storage
from pipelines.errors import ConfigError
from pipelines.evaluate.classify import run_classify
from pipelines.evaluate.cloze import run_cloze
from pipelines.evaluate.encoder import run_encoder
from pipelines.evaluate.ppl import run_ppl
from pipelines.evaluate.qa import run_qa
from pipelines.evaluate.safety import run_safety
from pipelines.evaluate.summarize import run_summarize


log = logging.getLogger(__name__)
EVAL_FILE = "eval.json"
DEFAULT_SUITES = {"decoder": ["cloze", "qa"], "sequence_classifier": ["classify"], "encoder": ["encoder"]}


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
