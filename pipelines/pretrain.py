"""Stage 2 — pre-training: `python -m pipelines.pretrain [model=decoder_small] [objective=clm] [trainer.num_workers=2]`.

The recipe: check what can be checked without Ray (objective, model, init_from, run name); join Ray; build or reuse
the token shards for the objective; train with the shared Ray Train loop; print the run directory whose `final/`
checkpoint the next stage takes as `init_from=`.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from pipelines import storage
from pipelines.data.build import check_data_config, prepare_shards
from pipelines.data.shards import read_manifest
from pipelines.entry import stage_main
from pipelines.errors import MissingPathError
from pipelines.train.driver import TrainOutcome, check_config, check_worker_resources, fit, preflight, print_summary


def given_shards(cfg: DictConfig) -> dict | None:
    """The manifest of `shards=DIR` (checked against the model, no Ray needed), or None to build/reuse shards."""
    if not cfg.shards:
        return None
    manifest = read_manifest(storage.absolute(cfg.shards))
    if manifest is None:
        raise MissingPathError(f"shards={cfg.shards}: no manifest.json there (build shards with python -m pipelines.data)")
    check_config(OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.objective, resolve=True),
                 manifest, cfg.data.seq_len)
    return manifest


def pretrain(cfg: DictConfig) -> TrainOutcome:
    init_from = preflight(cfg, stage="pretrain", init_from=cfg.init_from)
    manifest = given_shards(cfg)
    if manifest is None:
        check_data_config(cfg)
    connect(cfg.cluster)
    check_worker_resources(cfg)  # before building shards: a request the cluster cannot meet fails in seconds
    return fit(cfg, stage="pretrain", manifest=manifest or prepare_shards(cfg), init_from=init_from)


@stage_main("pretrain")
def main(cfg: DictConfig) -> None:
    print_summary(pretrain(cfg))


if __name__ == "__main__":
    main()
