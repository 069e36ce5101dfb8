"""Stage 4 — alignment: `python -m pipelines.align algorithm=<reward|dpo|ppo|grpo> init_from=<instruct run>`.

- `reward`: a reward model (decoder + scalar head) from the rankings, with the shared Ray Train loop; reported on the
  held-out rankings (pairwise accuracy, mean reward per response label and domain).
- `dpo`: direct preference optimisation on the same rankings, the same loop; reported as reward margins and
  accuracy on the held-out pairs.
- `ppo`, `grpo`: the actor-based RLHF loop (pipelines/align/loop.py) with `align.reward_model=<reward run>`.

Every run lands in `runs/align/<run.name>/` with a `final/` checkpoint a later stage (serving, evaluation) loads;
the held-out ranking report is written beside it as `rankings.json`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from pipelines.align.stage import align
from pipelines.entry import stage_main


@stage_main("align")
def main(cfg: DictConfig) -> None:
    align(cfg)


if __name__ == "__main__":
    main()
