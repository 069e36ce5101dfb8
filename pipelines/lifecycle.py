"""The whole life so far, one command: `python -m pipelines.lifecycle` (what `make demo` runs).

Built-in corpus -> tokenizer -> shards -> pre-training (conf/lifecycle.yaml, the pretrain config) -> instruction
tuning (the finetune stage, `finetune=instruct`, from the pre-trained `final/`) -> evaluation of both checkpoints,
all in this process on one Ray connection. It ends with the thesis table — what pre-training gave (knowledge: cloze,
QA asked as plain text) and what instruction tuning added (behaviour: answering questions in a chat turn, in the
expected form) — and the time each stage took.

The instruction-tuning stage is the same Hydra app a user runs alone (`python -m pipelines.finetune`), composed
here with the overrides in `lifecycle.instruct` plus the corpus and storage settings of this run.
"""

from __future__ import annotations

import time

from hydra import compose
from omegaconf import DictConfig, OmegaConf

from pipelines.entry import stage_main
from pipelines.evaluate import evaluate, print_report
from pipelines.finetune import finetune
from pipelines.pretrain import pretrain
from pipelines.train.driver import print_summary

# Settings the fine-tuning stage takes from this run, so that both stages read one corpus and one storage.
SHARED = ("data.root", "data.general_docs", "data.medical_docs", "data.corpus_seed", "data.safety_share", "run.root",
          "cluster.address")
COLUMNS = (("cloze", "cloze", "accuracy"), ("QA seen", "qa", "seen"), ("QA held-out", "qa", "held_out"),
           ("QA plain held-out", "qa", "plain_held_out"), ("format ok", "qa", "format_ok"))


def stage_config(cfg: DictConfig, name: str, overrides: list[str], init_from: str) -> DictConfig:
    """The `conf/<name>.yaml` config of a later stage, as its own command line would compose it."""
    shared = [f"{key}={OmegaConf.select(cfg, key)}" for key in SHARED if OmegaConf.select(cfg, key) is not None]
    return compose(config_name=name, overrides=[*shared, f"init_from={init_from}", *overrides])


def thesis_table(reports: dict[str, dict]) -> str:
    """One row per checkpoint, one column per measure (rates as percentages; '-' where not measured)."""
    width = max(len(name) for name in reports) + 2
    lines = ["".ljust(width) + "".join(title.rjust(19) for title, _, _ in COLUMNS)]
    for name, report in reports.items():
        cells = []
        for _, suite, metric in COLUMNS:
            value = (report.get(suite) or {}).get(metric)
            cells.append(("-" if value is None else f"{value:.1%}").rjust(19))
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
    suites = list(cfg.lifecycle.eval_suites)
    reports = {"pretrained": timed("evaluate pretrained", evaluate, cfg, pretrained.final_dir, suites=suites),
               "instruction-tuned": timed("evaluate instruction-tuned", evaluate, cfg, instructed.final_dir,
                                          suites=suites)}
    for name, report in reports.items():
        print(f"\n== {name}: {report['checkpoint']}")
        print_report(report, show=cfg.eval.show)
    print("\nWhat each stage added (held-out entities' facts are only in the pre-training corpus):")
    print(thesis_table(reports))
    print("\nTime per stage:")
    for name, seconds in times.items():
        print(f"  {name:<50} {seconds:7.0f} s")
    print(f"  {'total':<50} {time.perf_counter() - start:7.0f} s")


if __name__ == "__main__":
    main()
