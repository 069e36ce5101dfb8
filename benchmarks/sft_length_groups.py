"""Instruction tuning with length grouping (`trainer.length_groups`) against the same micro-batches without it
(`length_groups=1`, every example padded to the micro-batch's longest), in the same run.

    python -m benchmarks.sft_length_groups                          # decoder_mini, the demo's batches, CPU
    python -m benchmarks.sft_length_groups --groups 1 2 4 8 --steps 40 data.root=/tmp/bench_data

The batches are the lifecycle's instruction-tuning batches: 16 examples, 30% of them pre-training blocks
(`finetune.replay: 0.3`, full 129-token blocks) and the rest the built-in chat examples (a 4,096-piece tokenizer
trained with the chat text, as the demo's). Each setting runs the project's own step (`loop.group_by_length` then
`loop.accumulate`, the model's forward and backward) over the same batches from the same weights; printed: time per
step, positions computed per step (padding included), and the largest difference of the step's gradient from the
ungrouped one relative to its norm (grouping must leave the gradient unchanged).

Takes Hydra overrides of conf/pretrain.yaml (the corpus, tokenizer and model); shards are built with Ray Data once
and reused from `data.root`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cluster.connect import connect
from models import build_model
from pipelines.data import prepare_shards
from pipelines.train.driver import as_sft_rows
from pipelines.train.loop import accumulate, group_by_length
from pipelines.train.objectives import SupervisedChat

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
PRETRAIN = ["model=decoder_mini", "tokenizer.vocab_size=4096", "tokenizer.also_subsets=[instruct]"]


def rows(files: list[str]) -> dict[str, np.ndarray]:
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return {name: np.stack(table.column(name).to_numpy(zero_copy_only=False)) for name in table.column_names}


def batches(chat: dict, blocks: dict, *, count: int, size: int, replay: float, seed: int) -> list[dict]:
    """`count` micro-batches of `size` examples, each example a pre-training block with probability `replay`."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        take = rng.random(size) < replay
        pick_chat = rng.integers(0, len(chat["input_ids"]), size)
        pick_block = rng.integers(0, len(blocks["input_ids"]), size)
        out.append({name: torch.from_numpy(np.where(take[:, None], blocks[name][pick_block], chat[name][pick_chat])
                                           .astype(np.int64)) for name in ("input_ids", "loss_mask")})
    return out


def step_grad(objective: SupervisedChat, batch: dict, groups: int) -> tuple[torch.Tensor, int]:
    """The gradient of one optimizer step over `batch` cut into `groups` pieces, and the positions computed."""
    objective.zero_grad(set_to_none=True)
    pieces = group_by_length(batch, objective.lengths(batch), groups)
    accumulate(objective, objective, pieces, world=1, generator=None, autocast=contextlib.nullcontext())
    computed = sum(len(p["input_ids"]) * max(2, int(objective.lengths(p).max())) for p in pieces)
    return torch.cat([p.grad.flatten() for p in objective.parameters() if p.grad is not None]), computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--replay", type=float, default=0.3)
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=CONF, version_base=None):
        clm_cfg = compose("pretrain", [*PRETRAIN, *overrides])
    connect(clm_cfg.cluster)
    clm = prepare_shards(clm_cfg)
    with initialize_config_dir(config_dir=CONF, version_base=None):
        sft_cfg = compose("finetune", ["finetune=instruct", f"tokenizer.path={clm['tokenizer']['trained_at']}",
                                       *[o for o in overrides if o.startswith(("data.root", "cluster"))]])
    sft = prepare_shards(sft_cfg)
    width = sft["seq_len"] + 1
    chat = rows(sft["splits"]["train"]["files"])
    blocks = {name: np.stack(column.to_numpy(zero_copy_only=False)) for name, column in zip(
        ("input_ids", "loss_mask"), as_sft_rows(pq.read_table(clm["splits"]["train"]["files"][0]), width=width)
        .columns)}
    work = batches(chat, blocks, count=args.steps, size=args.micro_batch, replay=args.replay, seed=0)

    torch.set_num_threads(2)
    torch.manual_seed(0)
    tok = clm["tokenizer"]
    model = build_model(OmegaConf.to_container(clm_cfg.model, resolve=True)
                        | {"vocab_size": tok["vocab_size"], "max_seq_len": width})
    objective = SupervisedChat(model, {}, tok["special_ids"], vocab_size=tok["vocab_size"],
                               first_ordinary_id=tok["first_ordinary_id"])
    objective.train()
    reference = [step_grad(objective, b, 1)[0] for b in work[:3]]
    results = {}
    for groups in args.groups:
        step_grad(objective, work[0], groups)  # warm-up
        times, computed = [], []
        for batch in work:
            start = time.perf_counter()
            _, positions = step_grad(objective, batch, groups)
            times.append(time.perf_counter() - start)
            computed.append(positions)
        error = max(float((step_grad(objective, b, groups)[0] - ref).abs().max() / ref.norm())
                    for b, ref in zip(work[:3], reference))
        results[groups] = (statistics.median(times), statistics.mean(computed), error)

    real = statistics.mean(int(objective.lengths(b).sum()) for b in work)
    print(f"\nmodel {model.num_params() / 1e6:.1f}M params, micro-batch {args.micro_batch}, "
          f"replay {args.replay:.0%}, {args.steps} steps, real tokens per step {real:.0f}")
    print(f"{'length_groups':>14s} {'ms/step':>9s} {'positions/step':>15s} {'speed-up':>9s} {'grad diff':>10s}")
    base = results[args.groups[0]][0]
    for groups, (seconds, positions, error) in results.items():
        print(f"{groups:>14d} {seconds * 1e3:9.1f} {positions:15.0f} {base / seconds:8.2f}x {error:10.1e}")


if __name__ == "__main__":
    main()
