"""The `encoder` suite (encoder): its pre-training objective's validation metrics (MLM accuracy and perplexity, NSP
accuracy) on the shards it was trained on, or on `shards=DIR`."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from pipelines import storage
from pipelines.checkpoints import Loaded
from pipelines.data.shards import read_manifest
from pipelines.errors import ConfigError, MissingPathError
from pipelines.evaluate.ppl import shard_batches
from pipelines.train.objectives import objective_class, summarize


@torch.no_grad()
def encoder_metrics(model, meta: dict, manifest: dict, *, batch_size: int, max_batches: int | None) -> dict:
    """The encoder's pre-training objective on the validation pairs: MLM accuracy/perplexity, NSP accuracy."""
    name = meta["objective"]
    objective = objective_class(name)(model, meta["objective_config"], manifest["tokenizer"]["special_ids"],
                                      vocab_size=manifest["tokenizer"]["vocab_size"],
                                      first_ordinary_id=manifest["tokenizer"]["first_ordinary_id"]).eval()
    generator = torch.Generator().manual_seed(0)  # the same masks on every evaluation
    sums: dict[str, list[float]] = {}
    for batch in shard_batches(manifest["splits"]["valid"]["files"], ["input_ids", "token_type_ids", "is_next"],
                               batch_size, max_batches):
        _, stats = objective(batch, generator)
        for k, (s, c) in stats.items():
            acc = sums.setdefault(k, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
    totals = {k: (torch.tensor(s), torch.tensor(c)) for k, (s, c) in sums.items()}
    return {f"val_{k}": v for k, v in summarize(totals, objective.ppl_of).items()}


def checkpoint_shards(meta: dict, shards: str | None, *, checkpoint: str) -> dict | None:
    """The manifest of `shards`, else of the shards the checkpoint was trained on; None when neither is known."""
    where = storage.absolute(shards) if shards else meta.get("shards")
    if not where:
        return None
    manifest = read_manifest(where)
    if manifest is None:
        what = f"shards={shards}" if shards else f"the shards {checkpoint} was trained on ({where})"
        raise MissingPathError(f"{what}: no manifest.json there; pass shards=DIR with the validation shards")
    return manifest


def run_encoder(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    manifest = checkpoint_shards(ckpt.meta, shards, checkpoint=ckpt.path)
    if not manifest or manifest["format"] != "pairs" or not manifest["splits"]["valid"]["files"]:
        raise ConfigError(f"evaluating the encoder {ckpt.path} needs sentence-pair shards with a validation "
                          f"split: pass shards=DIR (built with python -m pipelines.data objective=mlm_nsp)")
    metrics = encoder_metrics(ckpt.model, ckpt.meta, manifest, batch_size=cfg.eval.batch_size,
                              max_batches=cfg.eval.ppl_batches)
    return metrics | {"shards": manifest["dir"]}
