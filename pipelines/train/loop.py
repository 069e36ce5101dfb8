"""The one training loop: a Ray Train V2 worker function shared by every objective and stage.

Each worker builds the model and its objective, streams its share of the training shards
(`ray.train.get_dataset_shard(...).iter_torch_batches`, prefetched, never materialised), and runs optimizer steps of
`grad_accum` micro-batches: AdamW (no decay on norms, biases, embeddings), linear warmup then cosine decay, gradient
clipping, bf16 autocast and fused AdamW on GPU, optional torch.compile, DDP (default) or FSDP2 (`fully_shard`).
A step's loss is the mean over all of its loss units (e.g. the assistant tokens of every micro-batch on every
worker, `accumulate`), so how the step is cut into micro-batches and workers leaves its gradient unchanged. That is
what makes length grouping free (`trainer.length_groups`): the padded objectives (chat, classification) cut each
micro-batch into up to that many pieces of similar lengths, each trimmed to its own longest example, and compute on
less padding for the same gradient.

Every `log_every` steps all ranks `ray.train.report` metrics (loss, lr, grad-norm, tokens/s, MFU, step time and the
share spent waiting for data); rank 0 prints a progress line and logs to wandb when chosen. Every `eval_every` steps
the validation shards are evaluated, each worker reading its share of them itself (`valid_batches`). Every
`ckpt_every` steps rank 0 attaches a checkpoint: the model in the models package's safetensors format plus
`train_state.safetensors` (optimizer, scheduler, step, data position).

Resuming (after a worker failure, `FailureConfig(max_failures)`, or a new run with the same name and storage):
weights, optimizer and scheduler come back from the latest checkpoint and training continues at the saved step.
The data position is (epoch, micro-batches consumed in that epoch): the resumed run starts that epoch's stream
again and skips the consumed micro-batches without computing on them. Randomness (MLM masking, dropout) is seeded
from (seed, rank, step) at every step, so nothing random needs saving and a resumed step draws the same masks.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import tempfile
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from models import build_model, load_state, load_weights_into, save_checkpoint, save_state
from models.checkpoint import unwrap_model
from models.encoder import SequenceClassifier
from models.heads import ScalarModel
from models.lora import apply_lora, load_adapters, mark_only_lora_trainable, merge_lora, save_adapters
from pipelines import storage
from pipelines.errors import ConfigError
from pipelines.text import duration
from pipelines.train.objectives import objective_class, summarize

TRAIN_STATE = "train_state.safetensors"


def train_func(config: dict[str, Any]) -> dict:
    t = config["trainer"]
    quiet_ray_train(t["ray_log_level"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(t["seed"])  # identical initial weights on every rank
    if t["torch_threads"]:
        torch.set_num_threads(t["torch_threads"])

    model = construct(config, init_from=config["init_from"])
    lora = config.get("lora") or {}
    if rank == 0:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        print(f"trainable parameters: {trainable:,} of {total:,} ({trainable / total:.2%})"
              + (f", LoRA rank {lora['rank']} on {list(lora['targets'])}" if lora.get("rank") else ""), flush=True)
    objective = objective_class(config["objective"]["name"])(model, config["objective"], config["special_ids"],
                                                             vocab_size=config["tokenizer_vocab_size"],
                                                             first_ordinary_id=config["first_ordinary_id"])
    start = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    checkpoint = ray.train.get_checkpoint()
    resumed_state = None
    if checkpoint:
        with checkpoint.as_directory() as path:
            if lora.get("rank"):  # the frozen base is init_from's; the checkpoint's adapters go on top
                load_adapters(model, path)
            else:
                load_weights_into(model, path)
            resumed_state = load_state(os.path.join(path, TRAIN_STATE))
        start = resumed_state["position"]
        if rank == 0:
            print(f"resuming from step {start['step']} (epoch {start['epoch']}, "
                  f"micro-batch {start['batch_in_epoch']})", flush=True)

    module = wrap(objective, t, device, world)
    optimizer = make_optimizer(model, t, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))
    if resumed_state:
        if is_sharded(t, world):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(objective, optimizer, optim_state_dict=resumed_state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(resumed_state["optimizer"])
        scheduler.load_state_dict(resumed_state["scheduler"])

    logger = make_logger(config, rank)
    loop = Loop(config, objective, module, optimizer, scheduler, device, rank, world, logger)
    final = loop.run(start)
    if logger:
        logger.finish()
    return final | {"resumed_from_step": start["step"]}


def quiet_ray_train(level: str) -> None:
    """Ray Train's messages in this worker from `level` (trainer.ray_log_level) up. The driver passes the level as
    `LoggingConfig(log_level)`, which Ray applies to the loggers named `ray.train...`; but Ray 2.60 logs every
    report ("Reporting training result N: TrainingReport(...)", INFO) through loggers named by their file's path
    (`logging.getLogger(__file__)` in ray/train/v2/_internal/execution/context.py), which only the worker's root
    logger, at INFO, filters: they get the level here."""
    marker = f"{os.sep}ray{os.sep}train{os.sep}"
    for name in list(logging.root.manager.loggerDict):
        if marker in name:
            logging.getLogger(name).setLevel(level)


def construct(config: dict, *, init_from: str | None) -> torch.nn.Module:
    """The model a run trains: the base model (`config["model"]`) with `init_from`'s weights, a task head
    (`config["head"]`, e.g. a sequence classifier) and LoRA adapters (`config["lora"]`, rank 0 = none).

    `config["init_into"]` says where the checkpoint's weights go: "base" (a pre-trained model under a new head: a
    classifier on an encoder, a reward model on a decoder) or "model" (a checkpoint of this very model, head
    included). With LoRA the base model is frozen but the head is trained in full: LoRA adapts what is there, and
    a frozen new head would stay at its random initialisation."""
    model = build_model(config["model"])
    base = model
    head = config.get("head")

    def load(target):
        if init_from:
            with storage.local_dir(init_from) as path:
                load_weights_into(target, path)

    if config.get("init_into", "base") == "base":
        load(model)
    if head:
        if head["kind"] == "sequence_classifier":
            model = SequenceClassifier(model, head["num_labels"])
        elif head["kind"] == "scalar":
            model = ScalarModel(model)
        else:
            raise ConfigError(f"unknown head {head['kind']!r}")
    if config.get("init_into", "base") == "model":
        load(model)
    lora = config.get("lora") or {}
    if lora.get("rank"):
        head_modules = [m for m in model.children() if m is not base] if head else []
        apply_lora(model, rank=lora["rank"], alpha=lora["alpha"], dropout=lora["dropout"],
                   targets=list(lora["targets"]))
        mark_only_lora_trainable(model, also=head_modules)
    return model


def is_sharded(t: dict, world: int) -> bool:
    return t["strategy"] == "fsdp" and world > 1


def wrap(objective: torch.nn.Module, t: dict, device: torch.device, world: int) -> torch.nn.Module:
    if is_sharded(t, world):
        from torch.distributed.fsdp import fully_shard

        from models import decoder, encoder

        objective.to(device)
        for block in [m for m in objective.modules() if isinstance(m, (decoder.Block, encoder.Block))]:
            fully_shard(block)
        module = fully_shard(objective)
    elif t["strategy"] in ("ddp", "fsdp"):
        # MLM alone leaves the NSP head unused and NSP alone the MLM head: DDP must be told, or it waits for
        # their gradients forever.
        module = ray.train.torch.prepare_model(
            objective, parallel_strategy="ddp",
            parallel_strategy_kwargs={"find_unused_parameters": objective.unused_parameters})
    else:
        raise ConfigError(f"trainer.strategy must be ddp or fsdp, got {t['strategy']!r}")
    return torch.compile(module) if t["compile"] else module


def make_optimizer(model: torch.nn.Module, t: dict, device: torch.device) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on matrices only: norms, biases and embeddings are not decayed."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                             fused=device.type == "cuda")


def lr_lambda(t: dict):
    """Linear warmup to the peak, then cosine decay to `min_lr_ratio` of it at max_steps."""
    warmup, total, floor = t["warmup_steps"], t["max_steps"], t["min_lr_ratio"]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_logger(config: dict, rank: int):
    """wandb on rank 0 when logger=wandb (imported only then); offline unless configured otherwise."""
    lcfg = config["logger"]
    if rank != 0 or lcfg["name"] != "wandb":
        return None
    import wandb

    return wandb.init(project=lcfg["project"], entity=lcfg["entity"], mode=lcfg["mode"], tags=lcfg["tags"],
                      dir=lcfg["dir"] or local_run_dir(config["run_dir"]), name=config["run_name"],
                      config={k: config[k] for k in ("model", "objective", "trainer", "stage")})


def local_run_dir(run_dir: str) -> str:
    """The run directory when it is local (wandb writes files there), else a temporary one."""
    if storage.is_uri(run_dir):
        return tempfile.mkdtemp(prefix="wandb-")
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def all_reduce_sum(values: list[float], device) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor.tolist()


def loss_weights(counts: torch.Tensor, world: int) -> torch.Tensor:
    """(M,) loss units of this worker's M micro-batches -> (M,) weights of their mean losses: count / the units of
    the whole optimizer step (every micro-batch of every worker), times `world` because DDP and FSDP average the
    gradients over the workers. The weighted means then add up to the mean over the step's units."""
    total = counts.sum()
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return (counts * world / total.clamp_min(1)).float()


def length_cuts(lengths: list[int], groups: int) -> list[int]:
    """Sorted example lengths -> the ends of at most `groups` consecutive runs that cover them with the fewest padded
    positions (a run costs its size x its longest length): dynamic programming over the cut points."""
    n = len(lengths)
    groups = max(1, min(groups, n))
    best = [[math.inf] * (n + 1) for _ in range(groups + 1)]  # best[g][i]: the first i examples in g runs
    cut = [[0] * (n + 1) for _ in range(groups + 1)]
    best[0][0] = 0
    for g in range(1, groups + 1):
        for i in range(1, n + 1):
            for j in range(g - 1, i):
                cost = best[g - 1][j] + (i - j) * lengths[i - 1]
                if cost < best[g][i]:
                    best[g][i], cut[g][i] = cost, j
    g = min(range(1, groups + 1), key=lambda k: (best[k][n], k))  # the fewest runs that reach the least padding
    ends, i = [], n
    while i > 0:
        ends.append(i)
        i, g = cut[g][i], g - 1
    return ends[::-1]


def group_by_length(batch: dict, lengths: torch.Tensor, groups: int) -> list[dict]:
    """A micro-batch of right-padded examples -> up to `groups` smaller ones of similar lengths (each then trimmed
    to its own longest example by the objective). The loss weights count the loss units of every piece
    (`accumulate`), so the step's gradient is the same; only the padding computed on goes."""
    if groups <= 1 or len(lengths) <= 1:
        return [batch]
    order = torch.argsort(lengths, stable=True)
    ends = length_cuts(lengths[order].tolist(), groups)
    starts = [0, *ends[:-1]]
    return [{name: column[order[a:b].to(column.device)] for name, column in batch.items()}
            for a, b in zip(starts, ends)]


def accumulate(module: torch.nn.Module, objective: torch.nn.Module, batches: list[dict], *, world: int, generator,
               autocast) -> torch.Tensor:
    """The forward and backward passes of one optimizer step over this worker's micro-batches (DDP synchronises
    on the last one); returns this worker's share of the step's loss (detached; the shares sum to the loss)."""
    weights = loss_weights(torch.stack([objective.loss_units(b) for b in batches]), world)
    share = 0.0
    for micro, batch in enumerate(batches):
        sync = micro == len(batches) - 1 or not hasattr(module, "no_sync")
        with (contextlib.nullcontext() if sync else module.no_sync()), autocast:
            loss, _ = module(batch, generator)
        (loss * weights[micro]).backward()
        share = share + loss.detach() * weights[micro]
    return share


def valid_batches(files: list[str], examples: int, batch_size: int, *, rank: int, world: int,
                  device: torch.device):
    """This worker's validation micro-batches ({column: tensor}), read straight from the split's shard files (of
    `examples` rows): an equal share of the rows for every rank, as consecutive rows, the remainder left out (under
    FSDP every forward pass is a collective: every rank must run as many).

    Not a Ray Dataset: each evaluation would start its Ray Data pipeline again (read tasks in new processes, seconds
    every time) to deliver the same few batches, which reading the files here gives in milliseconds."""
    share = examples // world
    first, end = rank * share, (rank + 1) * share
    offset, pending = 0, None
    for path in files:
        if offset >= end:
            break
        fs, p = storage.filesystem(path)
        rows = pq.read_metadata(p, filesystem=fs).num_rows
        low, high = max(first - offset, 0), min(end - offset, rows)
        offset += rows
        if low >= high:  # another rank's rows only
            continue
        table = pq.read_table(p, filesystem=fs).slice(low, high - low)
        pending = table if pending is None else pa.concat_tables([pending, table])
        while pending.num_rows >= batch_size:
            yield batch_tensors(pending.slice(0, batch_size), device)
            pending = pending.slice(batch_size)
    if pending is not None and pending.num_rows:
        yield batch_tensors(pending, device)


def batch_tensors(table: pa.Table, device: torch.device) -> dict[str, torch.Tensor]:
    """{column: tensor} of a table of shard rows, as Ray Data's iter_torch_batches gives them: token columns
    (fixed-size lists) as (rows, length), the rest as (rows,), each in its own dtype."""
    batch = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        values = (column.flatten().to_numpy().reshape(len(column), -1) if pa.types.is_fixed_size_list(column.type)
                  else column.to_numpy())
        batch[name] = torch.tensor(values, device=device)
    return batch


class Loop:
    """The step loop of one worker; `run` returns the final metrics (rank 0's become Result.return_value)."""

    def __init__(self, config, objective, module, optimizer, scheduler, device, rank, world, logger):
        self.c, self.t = config, config["trainer"]
        self.objective, self.module, self.optimizer, self.scheduler = objective, module, optimizer, scheduler
        self.device, self.rank, self.world, self.logger = device, rank, world, logger
        self.generator = torch.Generator(device=device)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if self.t["precision"] == "bf16"
                         else contextlib.nullcontext())
        self.flops_per_token = unwrap_model(objective).flops_per_token(config["seq_len"])
        self.history: list[dict] = []

    def batches(self, position: dict):
        """Micro-batches forever, epoch after epoch, tracking (epoch, batch_in_epoch) in `position`."""
        shard = ray.train.get_dataset_shard("train")
        skip = position["batch_in_epoch"]
        while True:
            got_any = False
            for i, batch in enumerate(shard.iter_torch_batches(
                    batch_size=self.t["micro_batch_size"], drop_last=True, prefetch_batches=self.t["prefetch_batches"],
                    local_shuffle_buffer_size=self.t["shuffle_buffer"] or None,
                    local_shuffle_seed=self.t["seed"] + position["epoch"], device=self.device)):
                got_any = True
                if i < skip:
                    continue
                position["batch_in_epoch"] = i + 1
                yield batch
            if not got_any:
                raise RuntimeError("the training shards hold fewer examples than one micro-batch per worker")
            position["epoch"] += 1
            position["batch_in_epoch"], skip = 0, 0

    def run(self, start: dict) -> dict:
        t = self.t
        position = dict(start)
        step = position["step"]
        stream = self.batches(position)
        window = {"loss": 0.0, "steps": 0, "tokens": 0, "wait": 0.0, "start": time.perf_counter(), "gnorm": 0.0}
        metrics: dict = {}
        self.module.train()
        while step < t["max_steps"]:
            if t["fail_at_step"] is not None and step == t["fail_at_step"] and start["step"] == 0 \
                    and self.rank == t["fail_rank"]:
                raise RuntimeError(f"injected fault at step {step} on rank {self.rank} (trainer.fail_at_step)")
            self.generator.manual_seed(t["seed"] * 1_000_003 + step * 7919 + self.rank)
            torch.manual_seed(t["seed"] * 1_000_003 + step * 7919 + self.rank)
            batches = []
            for _ in range(t["grad_accum"]):
                waited = time.perf_counter()
                batches.append(next(stream))
                window["wait"] += time.perf_counter() - waited
                window["tokens"] += self.objective.tokens(batches[-1])
            if t["length_groups"] > 1 and hasattr(self.objective, "lengths"):
                batches = [piece for batch in batches
                           for piece in group_by_length(batch, self.objective.lengths(batch), t["length_groups"])]
            loss_share = accumulate(self.module, self.objective, batches, world=self.world, generator=self.generator,
                                    autocast=self.autocast)
            gnorm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), t["grad_clip"])
            if hasattr(gnorm, "full_tensor"):  # FSDP: each rank holds a partial norm
                gnorm = gnorm.full_tensor()
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            position["step"] = step
            # Tensors until the next log line: converting every step would wait for the GPU every step.
            window["loss"] += loss_share  # summed over the workers: world x the step's loss
            window["gnorm"] += gnorm.detach()
            window["steps"] += 1
            last = step == t["max_steps"]
            evaluate = (step % t["eval_every"] == 0 or last) and self.c["has_valid"]
            checkpoint = step % t["ckpt_every"] == 0 or last
            if step % t["log_every"] == 0 or evaluate or checkpoint:
                metrics = self.window_metrics(step, window)
                window = {"loss": 0.0, "steps": 0, "tokens": 0, "wait": 0.0, "start": time.perf_counter(),
                          "gnorm": 0.0}
            if evaluate:
                metrics |= {f"val_{k}": v for k, v in self.evaluate().items()}
            if checkpoint:
                self.report(metrics, position)
            elif metrics.get("step") == step:
                ray.train.report(metrics, checkpoint=None)
            if metrics.get("step") == step:
                self.log(metrics)
                window["start"] = time.perf_counter()  # evaluation and checkpointing are not training time
        return metrics | {"history": self.history}

    def window_metrics(self, step: int, window: dict) -> dict:
        loss, steps, tokens, wait, gnorm = all_reduce_sum(
            [float(window[k]) for k in ("loss", "steps", "tokens", "wait", "gnorm")], self.device)
        elapsed = time.perf_counter() - window["start"]
        metrics = {"step": step, "loss": loss / steps, "lr": self.scheduler.get_last_lr()[0],
                   "grad_norm": gnorm / steps, "tokens_per_s": tokens / elapsed,
                   "step_time_s": elapsed / (steps / self.world), "data_wait_share": wait / self.world / elapsed}
        if self.t["peak_tflops"]:
            metrics["mfu"] = metrics["tokens_per_s"] * self.flops_per_token / (self.t["peak_tflops"] * 1e12 * self.world)
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss/perplexity/accuracies over this worker's validation shard, summed over workers."""
        objective = unwrap_model(self.objective)  # no DDP: ranks may see different batch counts
        objective.eval()
        generator = torch.Generator(device=self.device).manual_seed(self.t["seed"])  # same masks every eval
        sums: dict[str, list[float]] = {}
        batches = valid_batches(self.c["valid_files"], self.c["valid_examples"], self.t["micro_batch_size"],
                                rank=self.rank, world=self.world, device=self.device)
        for i, batch in enumerate(batches):
            if self.t["eval_batches"] and i >= self.t["eval_batches"]:
                break
            with self.autocast:
                _, stats = objective(batch, generator)
            for k, (s, c) in stats.items():
                acc = sums.setdefault(k, [0.0, 0.0])
                acc[0], acc[1] = acc[0] + float(s), acc[1] + float(c)
        names = objective.stat_names
        flat = all_reduce_sum([v for k in names for v in sums.get(k, [0.0, 0.0])], self.device)
        objective.train()
        totals = {k: (torch.tensor(flat[2 * i]), torch.tensor(flat[2 * i + 1])) for i, k in enumerate(names)}
        return summarize(totals, objective.ppl_of)

    def full_state(self) -> tuple[torch.nn.Module, dict]:
        """(a model holding all weights, the full optimizer state): under FSDP gathering them is a collective
        every rank joins; the optimizer state is then keyed by parameter name instead of index."""
        model = unwrap_model(self.objective).model
        if not is_sharded(self.t, self.world):
            return model, self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions, get_model_state_dict, get_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        weights = get_model_state_dict(model, options=options)
        optimizer = get_optimizer_state_dict(self.objective, self.optimizer, options=options)
        if self.rank != 0:
            return model, optimizer
        full = construct(self.c, init_from=None)
        full.load_state_dict(weights)
        return full, optimizer

    def report(self, metrics: dict, position: dict) -> None:
        model, optimizer_state = self.full_state()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                lora = self.c.get("lora") or {}
                if lora.get("rank"):
                    # The adapters alone (what resuming needs: the frozen base is init_from's) and the merged
                    # weights, a plain model any later stage loads.
                    save_adapters(tmp, model, lora)
                    model = merge_lora(copy.deepcopy(model))
                save_checkpoint(tmp, model, tokenizer_model=self.c["tokenizer_model"],
                                meta={"stage": self.c["stage"], "step": position["step"],
                                      "objective": self.c["objective"]["name"], "run": self.c["run_name"],
                                      "shards": self.c["shards"], "seq_len": self.c["seq_len"],
                                      "objective_config": self.c["objective"], **self.c.get("meta", {}),
                                      "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)}})
                save_state(os.path.join(tmp, TRAIN_STATE),
                           {"optimizer": optimizer_state, "scheduler": self.scheduler.state_dict(),
                            "position": dict(position)})
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    def log(self, metrics: dict) -> None:
        self.history.append(metrics)
        if self.rank != 0:
            return
        if self.logger:
            self.logger.log(metrics, step=metrics["step"])
        parts = [f"step {metrics['step']}/{self.t['max_steps']}", f"loss {metrics['loss']:.4f}",
                 f"lr {metrics['lr']:.2e}", f"gnorm {metrics['grad_norm']:.2f}",
                 f"{metrics['tokens_per_s'] / 1e3:.1f}k tok/s", f"{metrics['step_time_s'] * 1e3:.0f} ms/step",
                 f"data wait {metrics['data_wait_share']:.0%}"]
        left = self.t["max_steps"] - metrics["step"]
        if left:  # from the last window's step time (evaluations and checkpoints not counted)
            parts.append(f"ETA {duration(left * metrics['step_time_s'])}")
        if "mfu" in metrics:
            parts.append(f"MFU {metrics['mfu']:.1%}")
        parts += [f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("val_")]
        print(" | ".join(parts), flush=True)
