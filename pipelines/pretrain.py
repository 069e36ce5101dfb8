"""Stage 2 — pre-training: `python -m pipelines.pretrain [model=decoder_small] [objective=clm] [trainer.num_workers=2]`.

The recipe: check what can be checked without Ray (objective, model, init_from, run name); join Ray; build or reuse
the token shards for the objective; train with the shared Ray Train loop; print the run directory whose `final/`
checkpoint the next stage takes as `init_from=`.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig, OmegaConf, open_dict

from cluster.connect import connect
from pipelines import storage
from pipelines.data.build import SUBSETS, check_data_config, prepare_shards
from pipelines.data.shards import read_manifest
from pipelines.entry import stage_main
from pipelines.errors import ConfigError, MissingPathError
from pipelines.train.driver import (TrainOutcome, check_config, check_worker_resources, fit, preflight, print_summary,
                                    replay_part)


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


def check_mix(cfg: DictConfig) -> dict | None:
    """`mix.subset` and `mix.share`, checked without Ray: None when nothing is mixed in."""
    subset, share = cfg.mix.subset, cfg.mix.share
    if not subset and not share:
        return None
    if cfg.data.source != "builtin" or cfg.shards:
        raise ConfigError(f"mix.subset={subset} mixes a built-in corpus subset into the built-in corpus's shards; "
                          f"with data=files or shards= put that text in your corpus instead (mix.subset=null)")
    if subset not in SUBSETS or subset == cfg.data.subset or cfg.objective.shard_format != "clm":
        raise ConfigError(f"mix.subset={subset!r}: another built-in document subset than data.subset="
                          f"{cfg.data.subset!r} (e.g. medical), mixed into causal-LM pre-training (objective=clm)")
    if not 0 < share < 1:
        raise ConfigError(f"mix.share={share}: the share of training blocks from mix.subset, in (0, 1)")
    return {"subset": subset, "share": float(share)}


def mix_shards(cfg: DictConfig, mix: dict, manifest: dict) -> dict:
    """The causal-LM shards of `mix.subset`, cut by the same tokenizer as the main shards, as `fit`'s replay."""
    mix_cfg = copy.deepcopy(cfg)
    with open_dict(mix_cfg):
        mix_cfg.data.subset = mix["subset"]
        mix_cfg.tokenizer.path = manifest["tokenizer"]["trained_at"]
    mixed = prepare_shards(mix_cfg)
    return {"share": mix["share"], "source": mixed["dir"], "parts": [replay_part(mixed)]}


def pretrain(cfg: DictConfig) -> TrainOutcome:
    init_from = preflight(cfg, stage="pretrain", init_from=cfg.init_from)
    manifest = given_shards(cfg)
    mix = check_mix(cfg)
    if manifest is None:
        check_data_config(cfg)
    connect(cfg.cluster)
    check_worker_resources(cfg)  # before building shards: a request the cluster cannot meet fails in seconds
    manifest = manifest or prepare_shards(cfg)
    replay = mix_shards(cfg, mix, manifest) if mix else None
    meta = {"mix": {**mix, "shards": replay["source"]}} if mix else None
    return fit(cfg, stage="pretrain", manifest=manifest, init_from=init_from, replay=replay, meta=meta)


@stage_main("pretrain")
def main(cfg: DictConfig) -> None:
    print_summary(pretrain(cfg))


if __name__ == "__main__":
    main()
