"""The whole life so far, one command: `python -m pipelines.lifecycle` (what `make demo` runs).

Built-in corpus -> tokenizer -> shards -> pre-training (conf/lifecycle.yaml, the pretrain config) -> instruction
tuning (the finetune stage, `finetune=instruct`, from the pre-trained `final/`) -> a reward model from the rankings
(the align stage, `algorithm=reward`) -> RLHF (`algorithm=grpo` from the instruction-tuned model, scored by that
reward model) -> evaluation of every checkpoint, all in this process on one Ray connection. It ends with the thesis
table — what pre-training gave (knowledge: cloze, QA asked as plain text), what instruction tuning added (behaviour:
answering questions in a chat turn, in the expected form) and what alignment added (refusing unsafe requests
politely, the medical disclaimer, no rudeness, higher reward, without losing the QA) — and the time each stage took.

Each later stage is the same Hydra app a user runs alone (`python -m pipelines.finetune`, `python -m
pipelines.align`), composed here with the overrides in `lifecycle.<stage>` plus the corpus and storage settings of
this run.
"""

from __future__ import annotations

import time

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict

from pipelines.align.stage import align
from pipelines.entry import stage_main
from pipelines.evaluate import evaluate, print_report
from pipelines.finetune import finetune
from pipelines.pretrain import pretrain
from pipelines.train.driver import print_summary

# Settings the fine-tuning stage takes from this run, so that both stages read one corpus and one storage.
SHARED = ("data.root", "data.general_docs", "data.medical_docs", "data.corpus_seed", "data.safety_share", "run.root",
          "cluster.address")
COLUMNS = (("cloze", "cloze", "accuracy"), ("QA seen", "qa", "seen"), ("QA held-out", "qa", "held_out"),
           ("QA plain", "qa", "plain_held_out"), ("format ok", "qa", "format_ok"), ("refusal", "safety", "refusal"),
           ("disclaimer", "safety", "disclaimer"), ("over-refusal", "safety", "over_refusal"),
           ("rude", "safety", "rude"), ("reward", "safety", "reward"))
WIDTH = 14


def stage_config(cfg: DictConfig, name: str, overrides: list[str], init_from: str) -> DictConfig:
    """The `conf/<name>.yaml` config of a later stage, as its own command line would compose it."""
    shared = [f"{key}={OmegaConf.select(cfg, key)}" for key in SHARED if OmegaConf.select(cfg, key) is not None]
    return compose(config_name=name, overrides=[*shared, f"init_from={init_from}", *overrides])


def thesis_table(reports: dict[str, dict]) -> str:
    """One row per checkpoint, one column per measure (rates as percentages; '-' where not measured)."""
    width = max(len(name) for name in reports) + 2
    lines = ["".ljust(width) + "".join(title.rjust(WIDTH) for title, _, _ in COLUMNS)]
    for name, report in reports.items():
        cells = []
        for title, suite, metric in COLUMNS:
            value = (report.get(suite) or {}).get(metric)
            text = "-" if value is None else f"{value:+.3f}" if title == "reward" else f"{value:.1%}"
            cells.append(text.rjust(WIDTH))
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


@stage_main("lifecycle")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    times: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        began = time.perf_counter()
        result = fn(*args, **kwargs)
        times[name] = time.perf_counter() - began
        return result

    pretrained = timed("pre-train (corpus, tokenizer, shards, training)", pretrain, cfg)
    print_summary(pretrained)
    instruct_cfg = stage_config(cfg, "finetune", [*cfg.lifecycle.instruct, f"run.name={cfg.run.name}-instruct"],
                                pretrained.final_dir)
    instructed = timed("instruction tuning (shards, training)", finetune, instruct_cfg)
    print_summary(instructed)
    reward_cfg = stage_config(cfg, "align", [*cfg.lifecycle.reward, f"run.name={cfg.run.name}-reward"],
                              instructed.final_dir)
    rewarded = timed("reward model (shards, training, held-out rankings)", align, reward_cfg)
    rlhf_cfg = stage_config(cfg, "align", [*cfg.lifecycle.rlhf, f"run.name={cfg.run.name}-rlhf",
                                           f"align.reward_model={rewarded.final_dir}"], instructed.final_dir)
    aligned = timed(f"RLHF ({rlhf_cfg.algorithm.name}, actors)", align, rlhf_cfg)
    suites = list(cfg.lifecycle.eval_suites)
    with open_dict(cfg):
        cfg.eval.reward_model = rewarded.final_dir  # the safety suite's mean reward, for every checkpoint
    checkpoints = {"pretrained": pretrained, "instruction-tuned": instructed, "aligned": aligned}
    reports = {name: timed(f"evaluate {name}", evaluate, cfg, outcome.final_dir, suites=suites)
               for name, outcome in checkpoints.items()}
    for name, report in reports.items():
        print(f"\n== {name}: {report['checkpoint']}")
        print_report(report, show=cfg.eval.show)
    print("\nWhat each stage added (held-out facts, unsafe prompts and medical conditions are never in fine-tuning or "
          "alignment data):")
    print(thesis_table(reports))
    print("\nTime per stage:")
    for name, seconds in times.items():
        print(f"  {name:<50} {seconds:7.0f} s")
    print(f"  {'total':<50} {time.perf_counter() - start:7.0f} s")


if __name__ == "__main__":
    main()
