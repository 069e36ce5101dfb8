"""Stage 2 — pre-training: `python -m pipelines.pretrain [model=decoder_small] [objective=clm] [trainer.num_workers=2]`.

The recipe: join Ray; build or reuse the token shards for the objective; train with the shared Ray Train loop;
print the run directory whose `final/` checkpoint the next stage takes as `init_from=`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from cluster.connect import connect
from pipelines import storage
from pipelines.data import prepare_shards
from pipelines.shards import read_manifest
from pipelines.trainer import ConfigError, TrainOutcome, print_summary, run_training


def load_shards(cfg: DictConfig) -> dict:
    """The manifest of `cfg.shards` when given, else of the shards the data config describes (built if needed)."""
    if cfg.shards:
        manifest = read_manifest(storage.absolute(cfg.shards))
        if manifest is None:
            raise ConfigError(f"shards={cfg.shards}: no manifest.json there (build with python -m pipelines.data)")
        return manifest
    return prepare_shards(cfg)


def pretrain(cfg: DictConfig) -> TrainOutcome:
    manifest = load_shards(cfg)
    return run_training(cfg, stage="pretrain", manifest=manifest, init_from=cfg.init_from)


@hydra.main(config_path="../conf", config_name="pretrain", version_base=None)
def main(cfg: DictConfig) -> None:
    connect(cfg.cluster)
    print_summary(pretrain(cfg))


if __name__ == "__main__":
    main()
