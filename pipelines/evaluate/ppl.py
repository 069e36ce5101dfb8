"""The `ppl` suite (decoder): perplexity on the validation split of the general and medical corpora, tokenized with
the checkpoint's own tokenizer (shards built on Ray, or reused when a manifest matches)."""

from __future__ import annotations

import copy
import logging
import math

import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, open_dict

from pipelines import storage
from pipelines.checkpoints import Loaded
from pipelines.errors import ConfigError

log = logging.getLogger(__name__)


def shard_batches(files: list[str], columns: list[str], batch_size: int, max_batches: int | None):
    """{column: LongTensor} batches read from parquet shard files, at most `max_batches` (None = all)."""
    batches = 0
    for path in files:
        fs, p = storage.filesystem(path)
        table = pq.read_table(p, filesystem=fs, columns=columns)
        arrays = {}
        for name in columns:
            column = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(column.type):  # token columns: (rows, length)
                values = column.flatten().to_numpy().reshape(table.num_rows, -1)
            else:  # per-example labels: (rows,)
                values = column.to_numpy()
            arrays[name] = torch.from_numpy(values.astype("int64"))
        for i in range(0, table.num_rows, batch_size):
            if max_batches and batches >= max_batches:
                return
            batches += 1
            yield {name: values[i:i + batch_size] for name, values in arrays.items()}


@torch.no_grad()
def perplexity(model, files: list[str], *, batch_size: int, max_batches: int | None) -> float:
    """Token-level perplexity of a causal LM over CLM shard files (blocks of seq_len + 1 tokens)."""
    total, count = 0.0, 0
    for batch in shard_batches(files, ["input_ids"], batch_size, max_batches):
        ids = batch["input_ids"]
        logits = model(ids[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return math.exp(total / max(1, count))


PPL_SUBSETS = ("general", "medical")


def ppl_shards_config(cfg: DictConfig, subset: str, tokenizer_path: str) -> DictConfig:
    """The data stage's config for causal-LM shards of the built-in `subset`'s documents, tokenized with the
    checkpoint's tokenizer (data sizes, seq_len and root as `cfg` says)."""
    data_cfg = copy.deepcopy(cfg)
    with open_dict(data_cfg):
        data_cfg.data.subset = subset
        data_cfg.data.record = "text"  # documents, whatever records the stage that called us reads
        data_cfg.tokenizer.path = tokenizer_path
        data_cfg.objective = {"name": "clm", "shard_format": "clm"}
        data_cfg.force = False
    return data_cfg


def run_ppl(cfg: DictConfig, ckpt: Loaded, *, shards: str | None) -> dict:
    from cluster.connect import connect  # Ray: only when shards are built
    from pipelines.data.build import prepare_shards

    if cfg.data.source != "builtin":
        raise ConfigError(f"the ppl suite measures the built-in corpus's {' and '.join(PPL_SUBSETS)} documents; "
                          f"data.source={cfg.data.source} has neither (use data=builtin)")
    connect(cfg.cluster)
    section = {}
    for subset in PPL_SUBSETS:
        manifest = prepare_shards(ppl_shards_config(cfg, subset, storage.join(ckpt.path, "tokenizer.model")))
        files = manifest["splits"]["valid"]["files"]
        if not files:
            log.warning("%s (%s) has no validation examples: no %s perplexity", manifest["dir"], subset, subset)
            continue
        section[subset] = perplexity(ckpt.model, files, batch_size=cfg.eval.batch_size,
                                     max_batches=cfg.eval.ppl_batches)
    return section
