"""Pre-training throughput: the project's trainer (Ray Train + Ray Data from parquet shards, 1 worker) against a
plain PyTorch loop over the same model, optimizer and in-memory batches, in the same run.

    python -m benchmarks.pretrain_throughput                                   # CPU, decoder_tiny
    python -m benchmarks.pretrain_throughput trainer=gpu model=decoder_gpt2 data.seq_len=1024 \
        trainer.micro_batch_size=32 trainer.max_steps=300

Takes Hydra overrides of conf/pretrain.yaml. Prints steady-state tokens/s (the median of the logged windows after
the first `--skip` windows), MFU when `trainer.peak_tflops` is set, the data-wait share, and ours / plain.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cluster.connect import connect
from models import build_model
from pipelines.train.objectives import objective_class
from pipelines.data import prepare_shards
from pipelines.train.loop import lr_lambda, make_optimizer
from pipelines.train.driver import run_training

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
DEFAULTS = ["model=decoder_tiny", "trainer.max_steps=200", "trainer.log_every=20", "trainer.eval_every=100000",
            "trainer.ckpt_every=100000", "trainer.torch_threads=2", "trainer.micro_batch_size=32",
            "run.name=bench-${now:%Y%m%d-%H%M%S}"]


def plain_loop(cfg, manifest, steps: int, skip_steps: int) -> float:
    """tokens/s of the same model, objective and optimizer on batches already in memory (no Ray)."""
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    device = torch.device("cuda" if t["use_gpu"] and torch.cuda.is_available() else "cpu")
    if t["torch_threads"]:
        torch.set_num_threads(t["torch_threads"])
    torch.manual_seed(t["seed"])
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    tokenizer = manifest["tokenizer"]
    objective = objective_class(cfg.objective.name)(model, cfg.objective, tokenizer["special_ids"],
                                                    vocab_size=tokenizer["vocab_size"],
                                                    first_ordinary_id=tokenizer["first_ordinary_id"])
    objective.to(device)
    module = torch.compile(objective) if t["compile"] else objective
    optimizer = make_optimizer(model, t, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))
    vocab = manifest["tokenizer"]["vocab_size"]
    batches = [{"input_ids": torch.randint(11, vocab, (t["micro_batch_size"], manifest["seq_len"] + 1),
                                           device=device)} for _ in range(8)]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t["precision"] == "bf16")
    for step in range(steps):
        if step == skip_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast:
            loss, _ = module(batches[step % len(batches)])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), t["grad_clip"])
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    float(loss)  # wait for the device
    return (steps - skip_steps) * t["micro_batch_size"] * manifest["seq_len"] / (time.perf_counter() - start)


def main() -> None:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("pretrain", [*DEFAULTS, *sys.argv[1:]])
    connect(cfg.cluster)
    manifest = prepare_shards(cfg)
    t = cfg.trainer
    skip_windows = 2
    plain = plain_loop(cfg, manifest, t.max_steps, skip_windows * t.log_every)
    outcome = run_training(cfg, stage="bench", manifest=manifest)
    windows = outcome.metrics["history"][skip_windows:]
    ours = statistics.median(w["tokens_per_s"] for w in windows)
    wait = statistics.median(w["data_wait_share"] for w in windows)
    model = build_model(OmegaConf.to_container(cfg.model, resolve=True))
    flops = model.flops_per_token(manifest["seq_len"])
    print(f"\nmodel {cfg.model.kind} {model.num_params() / 1e6:.1f}M params, seq {manifest['seq_len']}, "
          f"batch {t.micro_batch_size}, {t.precision}, compile={t.compile}, steps {t.max_steps}")
    print(f"{'':32s} {'tokens/s':>12s} {'MFU':>7s} {'data wait':>10s}")
    for name, rate, w in (("plain PyTorch loop (in memory)", plain, None), ("Ray Train + Ray Data (ours)", ours, wait)):
        mfu = f"{rate * flops / (t.peak_tflops * 1e12):7.1%}" if t.peak_tflops else f"{'-':>7s}"
        print(f"{name:32s} {rate:12.0f} {mfu} {('-' if w is None else f'{w:.1%}'):>10s}")
    print(f"ratio ours / plain: {ours / plain:.3f}")


if __name__ == "__main__":
    main()
