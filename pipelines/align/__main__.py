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

from models import load_checkpoint
from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.align.rankings import dpo_report, reward_report, usable
from pipelines.entry import stage_main
from pipelines.errors import ConfigError, MissingPathError
from pipelines.finetune import finetune
from pipelines.train.driver import TrainOutcome, print_summary

SUPERVISED = ("reward", "dpo")
RLHF = ("ppo", "grpo")


def rankings_file(cfg: DictConfig) -> str:
    if cfg.rankings_eval_path:
        path = storage.absolute(cfg.rankings_eval_path)
        if not storage.exists(path):
            raise MissingPathError(f"rankings_eval_path={cfg.rankings_eval_path} does not exist")
        return path
    from pipelines.data.build import builtin_corpus

    return storage.join(builtin_corpus(cfg.data), "preference", "valid.jsonl")


def report_rankings(cfg: DictConfig, outcome: TrainOutcome) -> dict:
    """The held-out ranking report of a reward model or DPO policy, printed and written as rankings.json."""
    from pipelines.evaluate import read_jsonl

    with storage.local_dir(outcome.final_dir) as path:
        model, meta = load_checkpoint(path)
        tok = Tokenizer(storage.read_bytes(storage.join(path, "tokenizer.model")))
    records = usable(read_jsonl(rankings_file(cfg)), cfg.data.seq_len, tok)
    if cfg.algorithm.name == "reward":
        report = reward_report(model, tok, records)
        print(f"held-out rankings: pairwise accuracy {report['pairwise_accuracy']:.1%} over {report['pairs']} pairs "
              f"of {report['rankings']} rankings")
        for domain, means in report["mean_reward"].items():
            order = " > ".join(f"{label} {score:+.2f}" for label, score in means)
            print(f"  {domain:<8} {order} ({'ordered' if report['ordered_like_rankings'][domain] else 'NOT ordered'} "
                  f"like the rankings)")
    else:
        with storage.local_dir(meta["init_from"]) as path:
            reference, _ = load_checkpoint(path)
        report = dpo_report(model, reference, tok, records, beta=cfg.objective.beta)
        print(f"held-out pairs: accuracy {report['accuracy']:.1%}, mean reward margin {report['margin']:.3f} "
              f"({report['pairs']} pairs)")
    storage.write_json(storage.join(outcome.final_dir, "rankings.json"), report)
    return report


def align(cfg: DictConfig) -> TrainOutcome:
    """Run the configured algorithm; returns the outcome (its final/ checkpoint)."""
    name = cfg.algorithm.name
    if name in SUPERVISED:
        outcome = finetune(cfg, stage="align")
        print_summary(outcome)
        report_rankings(cfg, outcome)
        return outcome
    if name in RLHF:
        from pipelines.align.loop import rlhf

        return rlhf(cfg)
    raise ConfigError(f"algorithm must be one of {', '.join(SUPERVISED + RLHF)}, got {name!r} (algorithm=...)")


@stage_main("align")
def main(cfg: DictConfig) -> None:
    align(cfg)


if __name__ == "__main__":
    main()
