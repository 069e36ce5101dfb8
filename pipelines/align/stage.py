"""The alignment stage as functions (the Hydra app is `python -m pipelines.align`, pipelines/align/__main__.py):
`align(cfg)` runs the configured algorithm and returns its outcome; the lifecycle calls it for each alignment
stage. `reward` and `dpo` train with the fine-tuning recipe (pipelines/finetune.py) in the shared Ray Train loop,
then `report_rankings` measures the result on the held-out rankings; `ppo` and `grpo` run the actor loop
(pipelines/align/loop.py)."""

from __future__ import annotations

from omegaconf import DictConfig

from pipelines import checkpoints, storage
from pipelines.align.rankings import dpo_report, reward_report, usable
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
    loaded = checkpoints.load(outcome.final_dir)
    model, meta, tok = loaded.model, loaded.meta, loaded.tok
    records = usable(storage.read_jsonl(rankings_file(cfg)), cfg.data.seq_len, tok)
    if cfg.algorithm.name == "reward":
        report = reward_report(model, tok, records)
        print(f"held-out rankings: pairwise accuracy {report['pairwise_accuracy']:.1%} over {report['pairs']} pairs "
              f"of {report['rankings']} rankings")
        for domain, means in report["mean_reward"].items():
            order = " > ".join(f"{label} {score:+.2f}" for label, score in means)
            print(f"  {domain:<8} {order} ({'ordered' if report['ordered_like_rankings'][domain] else 'NOT ordered'} "
                  f"like the rankings)")
    else:
        reference = checkpoints.load(meta["init_from"], setting="init_from").model
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
