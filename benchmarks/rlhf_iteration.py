"""One RLHF iteration, measured: PPO and GRPO on decoder_small, generation with 1 vs 2 rollout workers, weight sync.

    python -m benchmarks.rlhf_iteration                     # CPU, embedded Ray
    python -m benchmarks.rlhf_iteration --device-gpus 1     # every role on a GPU (one per actor)

All in one run, with random-weight models (the figures are about time, not quality), the built-in corpus's
prompts and a tokenizer trained on its general text:
1. one GRPO and one PPO iteration of the real loop (pipelines/align/loop.py) at a fixed batch: the time split
   generation / reward / reference / learning / weight sync, and generated tokens/s;
2. rollout throughput: the same 32 prompts x 48 sampled tokens by 1 worker, then split over 2 workers;
3. weight sync learner -> 2 rollout workers for decoder_small and decoder_gpt2 (124M): our numpy arrays through the
   object store (one `ray.put`, zero-copy reads) beside the plain baseline, a torch state dict through the store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from models import ScalarModel, build_model, save_checkpoint
from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines.align.batch import load_numpy_weights, numpy_weights
from pipelines.align.loop import rlhf
from pipelines.align.rollout import RolloutActor
from pipelines.corpus.writer import ensure_corpus
from pipelines.entry import CONF_DIR
from pipelines.text import split_sentences


@ray.remote
class TorchTarget:
    """The baseline's receiving side: a model that loads a torch state dict from the object store."""

    def __init__(self, spec: dict):
        self.model = build_model(spec)

    def load(self, state: dict) -> float:
        start = time.perf_counter()
        self.model.load_state_dict(state)
        return time.perf_counter() - start


def preset(name: str, vocab: int, seq_len: int) -> dict:
    root = OmegaConf.create({"tokenizer": {"vocab_size": vocab}, "data": {"seq_len": seq_len}})
    root.model = OmegaConf.load(Path(CONF_DIR) / "model" / f"{name}.yaml")
    return OmegaConf.to_container(root.model, resolve=True)


def tokenizer(corpus: Path) -> bytes:
    texts = [json.loads(line)["text"] for path in sorted((corpus / "general").glob("*.jsonl"))
             for line in path.read_text().splitlines()]
    return train_sentencepiece((s for t in texts for s in split_sentences(t)), model_type="bpe", vocab_size=2048)


def iteration(algorithm: str, root: Path, policy: str, reward: str, args) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("align", [f"algorithm={algorithm}", f"init_from={policy}", f"align.reward_model={reward}",
                                f"run.root={root}/runs", f"run.name={algorithm}-{time.time_ns()}",
                                f"data.root={root}/data", "data.general_docs=1200", "data.medical_docs=50",
                                "align.iterations=1", f"align.prompts_per_iteration={args.prompts}",
                                f"align.max_new_tokens={args.new_tokens}", "align.max_prompt_tokens=64",
                                f"align.rollout.num_gpus={args.device_gpus}", f"align.reward.num_gpus={args.device_gpus}",
                                f"align.reference.num_gpus={args.device_gpus}", f"align.learner.num_gpus={args.device_gpus}",
                                f"align.learner.minibatch_size={args.minibatch}", f"align.torch_threads={args.threads}"])
        return rlhf(cfg).metrics["history"][0]


def throughput(policy: str, prompts: list[list[int]], workers: int, args) -> float:
    actors = [RolloutActor.options(num_cpus=0.5, num_gpus=args.device_gpus).remote(
        policy, num_gpus=args.device_gpus, torch_threads=args.threads) for _ in range(workers)]
    try:
        ray.get([a.pid.remote() for a in actors])  # started
        share = len(prompts) // workers
        kwargs = dict(max_new_tokens=args.new_tokens, temperature=1.0, top_p=1.0, seed=0)
        start = time.perf_counter()
        outs = ray.get([a.generate.remote(prompts[i * share:(i + 1) * share], **kwargs) for i, a in enumerate(actors)])
        seconds = time.perf_counter() - start
        return sum(len(t) for o in outs for t in o["tokens"]) / seconds
    finally:
        for a in actors:
            ray.kill(a)


def sync_times(name: str, vocab: int, root: Path, tok_bytes: bytes, args) -> tuple[float, float, float]:
    """(parameters in millions, median seconds numpy via the object store, median seconds torch state dict)."""
    spec = preset(name, vocab, 128)
    model = build_model(spec)
    path = root / name
    save_checkpoint(str(path), model, tokenizer_model=tok_bytes)
    ours = [RolloutActor.options(num_cpus=0.25).remote(str(path)) for _ in range(2)]
    base = [TorchTarget.options(num_cpus=0.25).remote(spec) for _ in range(2)]
    try:
        ray.get([a.pid.remote() for a in ours])
        fast, slow = [], []
        for version in range(1, args.repeats + 1):
            start = time.perf_counter()
            ref = ray.put(numpy_weights(model))
            ray.get([a.set_weights.remote(version, ref) for a in ours])
            fast.append(time.perf_counter() - start)
            start = time.perf_counter()
            ref = ray.put({k: v.detach().clone() for k, v in model.state_dict().items()})
            ray.get([b.load.remote(ref) for b in base])
            slow.append(time.perf_counter() - start)
        return model.num_params() / 1e6, statistics.median(fast), statistics.median(slow)
    finally:
        for a in [*ours, *base]:
            ray.kill(a)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per iteration (GRPO: x4 samples)")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--minibatch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per actor")
    parser.add_argument("--device-gpus", type=float, default=0, help="GPUs per actor (0: CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ray.init(include_dashboard=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        ensure_corpus(corpus, general_docs=1200, medical_docs=50)
        tok_bytes = tokenizer(corpus)
        vocab = Tokenizer(tok_bytes).vocab_size
        torch.manual_seed(0)
        decoder = build_model(preset("decoder_small", vocab, 192))
        save_checkpoint(str(root / "policy"), decoder, tokenizer_model=tok_bytes)
        save_checkpoint(str(root / "reward"), ScalarModel(decoder), tokenizer_model=tok_bytes)
        print(f"decoder_small {decoder.num_params() / 1e6:.1f}M parameters, vocab {vocab}; {args.prompts} prompts, "
              f"{args.new_tokens} new tokens, {args.threads} torch thread(s) per actor, GPUs per actor "
              f"{args.device_gpus}; {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
        print(f"\n{'iteration':<10}{'samples':>8}{'generate':>10}{'reward':>9}{'reference':>11}{'learn':>8}"
              f"{'sync':>8}{'total':>8}{'gen tok/s':>11}")
        for algorithm in ("grpo", "ppo"):
            m = iteration(algorithm, root, str(root / "policy"), str(root / "reward"), args)
            samples = args.prompts * (4 if algorithm == "grpo" else 1)
            print(f"{algorithm:<10}{samples:>8}" + "".join(f"{m['time_' + k]:>{w}.2f}" for k, w in (
                ("generate", 10), ("reward", 9), ("reference", 11), ("learn", 8), ("sync", 8), ("total", 8)))
                + f"{m['tokens_per_s']:>11.0f}", flush=True)

        tok = Tokenizer(tok_bytes)
        prompts = [tok.encode_chat([{"role": "user", "content": f"What is the capital of country number {i}?"}],
                                   add_generation_prompt=True).ids for i in range(32)]
        one, two = (throughput(str(root / "policy"), prompts, n, args) for n in (1, 2))
        print(f"\nrollout, 32 prompts x {args.new_tokens} sampled tokens: 1 worker {one:.0f} tok/s, "
              f"2 workers {two:.0f} tok/s ({two / one:.2f}x)")

        print(f"\n{'weight sync to 2 workers':<26}{'params':>9}{'numpy (ours)':>14}{'torch state dict':>18}")
        for name in ("decoder_small", "decoder_gpt2"):
            params, fast, slow = sync_times(name, vocab, root, tok_bytes, args)
            print(f"{name:<26}{params:>8.1f}M{fast * 1e3:>12.0f}ms{slow * 1e3:>16.0f}ms", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
