"""The whole life so far, one command: `python -m pipelines.lifecycle` (what `make demo` runs).

Builds the built-in corpus, tokenizer and shards (reused when present), pre-trains the decoder on the embedded
Ray cluster, then prints greedy completions of cloze prompts from the built-in facts and the cloze accuracy.
"""

from __future__ import annotations

import time

from omegaconf import DictConfig

from pipelines.entry import stage_main
from pipelines.evaluate import evaluate, print_report
from pipelines.pretrain import pretrain
from pipelines.train.driver import print_summary


@stage_main("lifecycle")
def main(cfg: DictConfig) -> None:
    start = time.perf_counter()
    outcome = pretrain(cfg)
    print_summary(outcome)
    print_report(evaluate(cfg, outcome.final_dir), show=cfg.eval.show)
    print(f"lifecycle finished in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
