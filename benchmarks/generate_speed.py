"""Generation speed: KV-cache decoding vs recomputing the whole sequence every step, side by side.

    python -m benchmarks.generate_speed                       # decoder_small, 256 new tokens, batch 1 and 8, CPU
    python -m benchmarks.generate_speed --device cuda --batch-sizes 1 8 32

The model is conf/model/decoder_small.yaml (vocab 8000) with random weights. Both sides decode greedily with the
same model in the same run: `models.generate.generate` (one prefill, then one token per step through the KV cache)
and a plain loop that feeds the full sequence to the model for every new token. Figures are new tokens per second
over the whole batch, and whether both produced the same tokens.
"""

import argparse
import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from models import build_model
from models.generate import generate

PRESET = Path(__file__).parents[1] / "conf" / "model" / "decoder_small.yaml"


def small_decoder(vocab_size: int, max_seq_len: int, device: str):
    root = OmegaConf.create({"tokenizer": {"vocab_size": vocab_size}, "data": {"seq_len": max_seq_len}})
    root.model = OmegaConf.load(PRESET)
    return build_model(OmegaConf.to_container(root.model, resolve=True)).to(device).eval()


@torch.inference_mode()
def recompute_greedy(model, prompts, new_tokens: int):
    """Baseline: no cache, the whole (B, T) sequence through the model for each new token."""
    seq = torch.tensor(prompts, device=model.model.embed_tokens.weight.device)  # (B, P), equal lengths
    for _ in range(new_tokens):
        next_token = model(seq)[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        seq = torch.cat([seq, next_token], dim=1)
    return seq[:, len(prompts[0]):].tolist()


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = small_decoder(args.vocab_size, args.prompt_len + args.new_tokens, args.device)
    print(f"decoder_small: {model.num_params() / 1e6:.1f}M parameters, vocab {args.vocab_size}, device {args.device}, "
          f"threads {torch.get_num_threads()}, prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine skews both columns)")
    generate(model, [[1] * args.prompt_len], max_new_tokens=4, temperature=0, pad_id=0)  # warm-up
    print(f"{'batch':>5} {'kv-cache tok/s':>15} {'recompute tok/s':>16} {'speed-up':>9} {'same tokens':>12}")
    for batch in args.batch_sizes:
        prompts = torch.randint(4, args.vocab_size, (batch, args.prompt_len)).tolist()
        cached, t_cache = timed(
            lambda: generate(model, prompts, max_new_tokens=args.new_tokens, temperature=0, pad_id=0), args.device
        )
        full, t_full = timed(lambda: recompute_greedy(model, prompts, args.new_tokens), args.device)
        n = batch * args.new_tokens
        print(f"{batch:>5} {n / t_cache:>15.1f} {n / t_full:>16.1f} {t_full / t_cache:>8.1f}x "
              f"{str(cached.tokens == full):>12}", flush=True)


if __name__ == "__main__":
    main()
