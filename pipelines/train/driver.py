"""Driver side of training: check the config, then run a Ray Train `TorchTrainer`.

`preflight` is what a stage calls before it starts Ray or builds shards: an unknown objective, a model of the wrong
kind for it, an `init_from` that does not exist or holds another model's shape, a run name that holds another
model's checkpoints, or a run that already finished — each is one clear error, found in milliseconds.
A stage then joins Ray, calls `check_worker_resources` (the cluster against the request), prepares its shards and
calls `fit`, which checks the model against the shards (vocabulary, sequence length, format), builds the training
Ray Dataset from the manifest's parquet shards, fits, and leaves the final checkpoint (weights, config, tokenizer,
meta) and `metrics.json` in `{run.root}/{stage}/{run.name}/final`, the directory the next stage takes as
`init_from=`. `run_training` does all of it for a caller that has its shards already (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.train
from omegaconf import DictConfig, OmegaConf
from ray.train.torch import TorchTrainer

from cluster.connect import wait_for_resources
from pipelines import checkpoints, storage
from pipelines.checkpoints import FINAL
from pipelines.errors import CheckpointError, ConfigError, RunFinishedError
from pipelines.train.objectives import objective_class
from pipelines.train.loop import TRAIN_STATE, train_func

log = logging.getLogger(__name__)
# A training split at most this large, read more than once by a run, is read by the driver once and handed to Ray
# Data as one object (first_examples); a larger one is streamed from its shards.
IN_MEMORY_BYTES = 64 << 20


@dataclass
class TrainOutcome:
    run_dir: str
    final_dir: str
    metrics: dict


# Model settings that do not change the shape of any weight: a checkpoint may be loaded into a model that differs
# only in these.
NOT_SHAPES = ("dropout", "init_std", "norm_eps", "rope_theta")


def check_checkpoint_fits(path: str, model_cfg: dict, *, setting: str) -> dict:
    """The checkpoint at `path` holds the model `model_cfg` describes (kind and every weight shape); returns its
    config.json. Read on the driver, so a mismatch is one line here, not a retried failure in every worker."""
    saved = storage.read_json(storage.join(path, "config.json"))
    if saved["kind"] != model_cfg["kind"]:
        raise CheckpointError(f"{setting}: the checkpoint holds a {saved['kind']} but model.kind is "
                              f"{model_cfg['kind']!r}; choose the matching model=...")
    ignored = set(NOT_SHAPES) | ({"max_seq_len"} if model_cfg["kind"] == "decoder" else set())  # rotary: no table
    changed = {k: (saved["config"].get(k), v) for k, v in model_cfg.items()
               if k != "kind" and k not in ignored and saved["config"].get(k) != v}
    if changed:
        diff = ", ".join(f"model.{k}={v!r} (checkpoint: {was!r})" for k, (was, v) in sorted(changed.items()))
        raise CheckpointError(f"{setting} holds another model's shape: {diff}; use the checkpoint's model settings")
    return saved


def preflight(cfg: DictConfig, *, stage: str, init_from: str | None) -> str | None:
    """Checks that need neither Ray nor shards; returns `init_from` resolved to a checkpoint directory."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    objective = objective_class(cfg.objective.name)
    if model_cfg["kind"] != objective.model_kind:
        raise ConfigError(f"objective={cfg.objective.name} trains {objective.model_kind} models, but model.kind is "
                          f"{model_cfg['kind']!r} (pick e.g. model={objective.model_kind}_tiny)")
    if cfg.trainer.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"trainer.strategy must be ddp or fsdp, got {cfg.trainer.strategy!r}")
    if model_cfg["max_seq_len"] < cfg.data.seq_len:
        raise ConfigError(f"model.max_seq_len={model_cfg['max_seq_len']} is shorter than data.seq_len="
                          f"{cfg.data.seq_len}")
    init_from = checkpoints.resolve(init_from, "init_from")
    if init_from:
        check_checkpoint_fits(init_from, model_cfg, setting=f"init_from={init_from}")
    check_resume(run_directory(cfg, stage), model_cfg, cfg.trainer.max_steps)
    return init_from


def check_worker_resources(cfg: DictConfig) -> None:
    """The cluster has what the workers ask for (or an autoscaler adds it in time)."""
    t = cfg.trainer
    resources = {"CPU": t.cpus_per_worker} | ({"GPU": 1} if t.use_gpu else {})
    wait_for_resources(cfg.cluster, {k: v * t.num_workers for k, v in resources.items()},
                       what=f"trainer.num_workers={t.num_workers} x {resources}")


def run_directory(cfg: DictConfig, stage: str) -> str:
    return storage.join(storage.root(cfg.run.root, "run.root"), stage, cfg.run.name)


def check_config(model_cfg: dict, objective_cfg: dict, manifest: dict, seq_len: int) -> None:
    """The model and objective against the shards they will read."""
    objective = objective_class(objective_cfg["name"])
    if "first_ordinary_id" not in manifest["tokenizer"]:
        raise ConfigError(f"{manifest['dir']} was built by an older version of this project: rebuild the shards "
                          f"(python -m pipelines.data, or drop shards=)")
    if manifest["format"] != objective.shard_format:
        raise ConfigError(f"objective={objective_cfg['name']} reads {objective.shard_format!r} shards, but "
                          f"{manifest['dir']} holds {manifest['format']!r} shards")
    vocab = manifest["tokenizer"]["vocab_size"]
    if model_cfg["vocab_size"] < vocab:
        raise ConfigError(f"model.vocab_size={model_cfg['vocab_size']} is smaller than the tokenizer's {vocab} pieces "
                          f"({manifest['tokenizer']['path']}): token ids would fall outside the embedding")
    if seq_len > manifest["seq_len"]:
        raise ConfigError(f"data.seq_len={seq_len} is larger than the shards' {manifest['seq_len']} "
                          f"({manifest['dir']}); rebuild them with python -m pipelines.data data.seq_len={seq_len}")
    if model_cfg["max_seq_len"] < manifest["seq_len"]:
        raise ConfigError(f"model.max_seq_len={model_cfg['max_seq_len']} is shorter than the shards' sequences "
                          f"({manifest['seq_len']} tokens)")


def run_training(cfg: DictConfig, *, stage: str, manifest: dict, init_from: str | None = None) -> TrainOutcome:
    """Check everything (`preflight`, the cluster's resources), then `fit`: for callers that have not checked."""
    init_from = preflight(cfg, stage=stage, init_from=init_from)
    check_worker_resources(cfg)
    return fit(cfg, stage=stage, manifest=manifest, init_from=init_from)


def replay_part(manifest: dict, weight: float = 1.0) -> dict:
    """One part of `fit`'s replay: the training split of `manifest`'s causal-LM shards and its share (`weight`) of
    the replayed blocks."""
    train = manifest["splits"]["train"]
    return {"files": train["files"], "examples": train["examples"], "weight": weight}


def fit(cfg: DictConfig, *, stage: str, manifest: dict, init_from: str | None, head: dict | None = None,
        lora: dict | None = None, init_into: str = "base", meta: dict | None = None,
        train_examples: int | None = None, replay: dict | None = None,
        callbacks: list | None = None) -> TrainOutcome:
    """Train on `manifest`'s shards after `preflight` and `check_worker_resources` passed (`init_from` as resolved
    by `preflight`): checks the model against the shards, builds the datasets, fits, writes `final/`.

    Fine-tuning adds: `head` (a task head on the model, e.g. {"kind": "sequence_classifier", "num_labels": 7}),
    `lora` (adapter settings; rank 0 = full fine-tuning), `init_into` ("base": init_from holds the model under
    the head; "model": it holds the whole model), `meta` (recorded in every checkpoint's meta.json),
    `train_examples` (train on the first N training examples only), `replay` (pre-training text mixed into `sft` or
    `clm` training: {"share": of the training examples, "parts": [replay_part(...), ...]}, e.g. pre-training's
    general text and the medical text it mixed in) and Ray
    Train `callbacks` (e.g. Tune's)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    objective_cfg = OmegaConf.to_container(cfg.objective, resolve=True)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    check_config(model_cfg, objective_cfg, manifest, cfg.data.seq_len)
    resources = {"CPU": trainer_cfg["cpus_per_worker"]} | ({"GPU": 1} if trainer_cfg["use_gpu"] else {})
    storage_path = storage.join(storage.root(cfg.run.root, "run.root"), stage)
    splits = manifest["splits"]
    examples = splits["train"]["examples"]
    if train_examples:
        if train_examples > examples:
            raise ConfigError(f"{train_examples} training examples asked for, the shards hold {examples} "
                              f"({manifest['dir']})")
        examples = train_examples

    extra = round(examples * replay["share"] / (1 - replay["share"])) if replay else 0
    passes = data_passes(trainer_cfg, examples + extra)
    # A small split that the run reads many times (a few hundred records fine-tuned for hundreds of steps) is read
    # here once, as `train_examples` are: see first_examples.
    small = passes > 1 and sum(storage.file_size(f) for f in splits["train"]["files"]) <= IN_MEMORY_BYTES
    few = first_examples(splits["train"]["files"], examples) if train_examples or small else None

    def read_train(i: int):
        ds = ray.data.from_arrow_refs([few]) if few is not None else ray.data.read_parquet(splits["train"]["files"])
        if not extra:
            return ds
        # Each pass draws its own sample of pre-training blocks (of each part, in its proportion), and the kinds
        # are shuffled together.
        for part in replay["parts"]:
            blocks = ray.data.read_parquet(part["files"]).random_sample(
                min(1.0, extra * part["weight"] / max(1, part["examples"])), seed=trainer_cfg["seed"] + i)
            if manifest["format"] == "sft":  # causal-LM blocks already are what clm (domain) shards hold
                blocks = blocks.map_batches(as_sft_rows, fn_kwargs={"width": manifest["seq_len"] + 1},
                                            batch_format="pyarrow", batch_size=1024)
            ds = ds.union(blocks)
        return ds.random_shuffle(seed=trainer_cfg["seed"] + i)

    if few is not None and not extra:
        datasets = {"train": ray.data.from_arrow_refs([few] * passes)}  # one object, listed once per pass
    else:
        train = [read_train(i) for i in range(passes)]
        datasets = {"train": train[0].union(*train[1:]) if len(train) > 1 else train[0]}
    if not splits["valid"]["files"]:  # the workers read the validation shards themselves (loop.valid_batches)
        log.warning("%s has no validation examples: training without validation metrics", manifest["dir"])
    config = {
        "stage": stage, "run_name": cfg.run.name, "run_dir": storage.join(storage_path, cfg.run.name),
        "model": model_cfg, "objective": objective_cfg,
        "trainer": trainer_cfg, "logger": OmegaConf.to_container(cfg.logger, resolve=True),
        "init_from": init_from, "seq_len": manifest["seq_len"],
        "special_ids": manifest["tokenizer"]["special_ids"], "tokenizer_vocab_size": manifest["tokenizer"]["vocab_size"],
        "first_ordinary_id": manifest["tokenizer"]["first_ordinary_id"],
        "tokenizer_model": storage.read_bytes(manifest["tokenizer"]["path"]), "shards": manifest["dir"],
        "valid_files": splits["valid"]["files"], "valid_examples": splits["valid"]["examples"],
        "has_valid": bool(splits["valid"]["files"]),
        "head": head, "lora": lora if lora and lora.get("rank") else None, "init_into": init_into,
        "meta": meta or {},
    }
    trainer = TorchTrainer(
        train_func,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=trainer_cfg["num_workers"], use_gpu=trainer_cfg["use_gpu"],
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=trainer_cfg["keep_checkpoints"]),
            failure_config=ray.train.FailureConfig(max_failures=trainer_cfg["max_failures"]),
            worker_runtime_env={"env_vars": worker_env()},
            logging_config=ray.train.LoggingConfig(log_level=trainer_cfg["ray_log_level"]),
            callbacks=callbacks,
        ),
        datasets=datasets,
        # The same block order on every run, so a resumed run skips the micro-batches it already trained on.
        dataset_config=ray.train.DataConfig(execution_options=ordered_execution()),
    )
    log.info("training %s (%s) on %d worker(s): %s", model_cfg["kind"], objective_cfg["name"],
             trainer_cfg["num_workers"], storage.join(storage_path, cfg.run.name))
    result = trainer.fit()
    run_dir = storage.join(storage_path, cfg.run.name)
    final_dir = storage.join(run_dir, FINAL)
    metrics = dict(result.return_value or {})
    with result.checkpoint.as_directory() as path:
        for name in sorted(os.listdir(path)):
            if name != TRAIN_STATE:
                with open(os.path.join(path, name), "rb") as f:
                    storage.write_bytes(storage.join(final_dir, name), f.read())
    # Ray's checkpoint.path drops the URI scheme (s3://bucket/x -> bucket/x): name it by the run directory.
    checkpoint = storage.join(run_dir, result.checkpoint.path.rstrip("/").rsplit("/", 1)[-1])
    storage.write_json(storage.join(final_dir, "metrics.json"),
                       {"stage": stage, "run": cfg.run.name, "checkpoint": checkpoint, **metrics})
    return TrainOutcome(run_dir=run_dir, final_dir=final_dir, metrics=metrics)


def first_examples(files: list[str], count: int) -> ray.ObjectRef:
    """The first `count` rows of the shard `files` (in their order), read here and put in the object store once.

    A run on a few examples (`train_examples`, or a split under IN_MEMORY_BYTES) makes many passes over them
    (`data_passes`): a Ray Data read of the shards per pass is tens of operators that share the cluster's CPUs with
    the workers (on 2 CPUs they waited minutes for 50 examples, and Ray Data warned "Cluster resources are not
    enough to run any task ... may hang forever" for 20 records), where one read here takes milliseconds."""
    tables, rows = [], 0
    for path in files:
        if rows >= count:
            break
        fs, p = storage.filesystem(path)
        tables.append(pq.read_table(p, filesystem=fs))
        rows += tables[-1].num_rows
    return ray.put(pa.concat_tables(tables).slice(0, count).combine_chunks())


def as_sft_rows(batch: pa.Table, *, width: int) -> pa.Table:
    """Causal-LM blocks as `sft` rows of `width` tokens: right-padded (or cut), every real token trained on."""
    ids = batch.column("input_ids").combine_chunks()
    block = ids.type.list_size
    tokens = ids.flatten().to_numpy().reshape(len(ids), block)[:, :width]
    padded = np.zeros((len(ids), width), np.int32)
    padded[:, : tokens.shape[1]] = tokens
    mask = np.zeros((len(ids), width), np.int8)
    mask[:, : tokens.shape[1]] = 1
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(padded.reshape(-1)), width),
                     "loss_mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.reshape(-1)), width)})


def check_resume(run_dir: str, model_cfg: dict, max_steps: int) -> None:
    """An existing run is resumed from its latest checkpoint: it must hold the same model, and have steps left
    (re-running a finished run would train nothing and overwrite its final metrics)."""
    fs, path = storage.filesystem(run_dir)
    checkpoints = sorted(info.path for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                         if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"))
    if not checkpoints:
        return
    latest = storage.join(run_dir, checkpoints[-1].rsplit("/", 1)[-1])
    try:
        check_checkpoint_fits(latest, model_cfg, setting=f"run {run_dir}")
    except CheckpointError as error:
        raise CheckpointError(f"{error} — it already holds checkpoints of another model; resume it with the same "
                              f"model, or choose a new run.name") from None
    step = storage.read_json(storage.join(latest, "meta.json"))["step"]
    if step >= max_steps:
        raise RunFinishedError(f"run {run_dir} finished at step {step}; raise trainer.max_steps (now {max_steps}) "
                               f"to continue or choose a new run.name")


def ordered_execution() -> ray.data.ExecutionOptions:
    """Ray Train's default ingest options, with blocks kept in order."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def data_passes(t: dict, examples: int, most: int = 64) -> int:
    """Passes over the training shards that one Ray Data execution should stream.

    Every epoch of a Ray Train dataset shard restarts the Ray Data pipeline (seconds of start-up, all of it waiting
    time for the workers). A small corpus trained for many steps would pay that every few steps, so the training
    dataset is the union of as many reads of the shards as the run needs (capped; read_parquet drops repeated
    paths, so listing the files twice would not do): one "epoch" of the loop is then many passes.
    """
    needed = t["max_steps"] * t["micro_batch_size"] * t["grad_accum"] * t["num_workers"]
    return max(1, min(most, -(-needed // max(1, examples))))


def worker_env() -> dict:
    """Environment for the workers: Train V2 does not forward the driver's, so pass what they need."""
    env = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    # Train V2 patches print() into its logger, which then reaches the driver twice; plain stdout reaches it once.
    return env | {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}


def print_summary(outcome: TrainOutcome) -> None:
    final = {k: v for k, v in outcome.metrics.items() if k != "history"}
    print(f"final metrics: {json.dumps(final, default=float)}")
    print(f"run directory: {outcome.run_dir}\nfinal checkpoint: {outcome.final_dir}  (next stage: init_from=...)")
