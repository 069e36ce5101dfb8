"""Batched sampling from a `Decoder` with its KV cache.

Features: ragged prompts left-padded into one batch (a 1/0 mask, per-sequence positions); one prefill pass, then
one token per step through the preallocated `KVCache`; greedy (temperature 0), temperature, top-k and top-p
(nucleus) sampling; per-sequence stop tokens, the batch ending when every sequence has finished; a seed that makes
sampling reproducible through its own `torch.Generator` (the global RNG is left alone); log-probabilities of the
sampled tokens under the distribution they were drawn from (softmax of logits / temperature after the top-k /
top-p filter; greedy decoding: the unscaled logits), which is what RLHF needs as the behaviour policy's log-probs
(its learner scores the tokens at the same temperature); `stream_generate` yields one token at a time
for single-prompt callers; `check_sampling` refuses settings nothing can be sampled from (negative temperature,
top_p <= 0). Serving's continuous batching (pipelines/serve/engine.py) drives the same `KVCache` slot by slot with
`sample_next`. Returned tokens INCLUDE the stop token that ended a sequence (with its log-prob).
"""

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from models.decoder import Decoder


@dataclass
class GenerationOutput:
    tokens: list[list[int]]  # new tokens per sequence, up to and including the stop token
    logprobs: list[list[float]]  # log p(token) under the distribution sampled from (temperature, top-k, top-p)
    finish_reasons: list[str]  # "stop" (a stop token was produced) or "length" (max_new_tokens reached)


def filter_logits(logits, *, top_k: int = 0, top_p: float = 1.0):
    """(B, V) logits -> (B, V) with tokens outside the top-k / top-p nucleus set to -inf (0 / 1.0: no filter)."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # the top token always has mass_before 0 and stays
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sampling_logits(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0):
    """(B, V) logits -> (B, V) logits of the distribution a token is drawn from: scaled by 1 / temperature and
    filtered; greedy decoding (temperature 0) takes the argmax of the unscaled logits, returned as they are."""
    if temperature == 0:
        return logits
    return filter_logits(logits / temperature, top_k=top_k, top_p=top_p)


def sample_next(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0, generator=None):
    """(B, V) logits -> (B,) token ids: argmax when temperature == 0, else a draw from the filtered softmax."""
    return _draw(sampling_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p), temperature, generator)


def _draw(dist_logits, temperature: float, generator):
    if temperature == 0:
        return dist_logits.argmax(dim=-1)
    return torch.multinomial(dist_logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


def check_sampling(*, temperature: float, top_k: int = 0, top_p: float = 1.0, max_new_tokens: int = 1) -> None:
    """Refuse settings nothing can be sampled from, naming the value: a negative temperature would silently invert
    the distribution, top_p <= 0 masks every token (and multinomial fails on the NaNs)."""
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = no limit), got {top_k!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")


def left_pad(prompts: list[list[int]], pad_id: int, device=None):
    """Ragged prompts -> (B, P) token ids and (B, P) 1/0 mask, right-aligned so that every prompt ends at P."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt and every prompt needs at least one token")
    P = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, P - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def _decode_steps(model: Decoder, prompts, *, max_new_tokens, temperature, top_k, top_p, pad_id, seed):
    """Yield ((B,) next token ids, (B,) their log-probs) once per step; stop by closing the generator."""
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p, max_new_tokens=max_new_tokens)
    device = model.model.embed_tokens.weight.device
    ids, mask = left_pad(prompts, pad_id, device)  # (B, P)
    B, P = ids.shape
    if P + max_new_tokens > model.cfg.max_seq_len:
        raise ValueError(
            f"prompt ({P}) + max_new_tokens ({max_new_tokens}) exceeds max_seq_len={model.cfg.max_seq_len}"
        )
    generator = torch.Generator(device).manual_seed(seed) if seed is not None else None
    was_training = model.training
    model.eval()
    try:
        cache = model.make_kv_cache(B, P + max_new_tokens)
        hidden = model.hidden_states(ids, attention_mask=mask, kv_cache=cache)  # (B, P, D)
        for step in range(max_new_tokens):
            logits = sampling_logits(model.lm_logits(hidden[:, -1]).float(), temperature=temperature, top_k=top_k,
                                     top_p=top_p)  # (B, V)
            token = _draw(logits, temperature, generator)
            logprob = F.log_softmax(logits, dim=-1).gather(-1, token[:, None]).squeeze(-1)  # (B,)
            yield token, logprob
            if step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)  # (B, P + step + 1)
            hidden = model.hidden_states(token[:, None], attention_mask=mask, kv_cache=cache)  # (B, 1, D)
    finally:
        model.train(was_training)


def generate(
    model: Decoder,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_ids=(),
    pad_id: int,
    seed: int | None = None,
) -> GenerationOutput:
    """Sample up to max_new_tokens after each prompt; a sequence stops after producing a token in stop_ids."""
    stop = set(stop_ids)
    B = len(prompts)
    tokens: list[list[int]] = [[] for _ in range(B)]
    logprobs: list[list[float]] = [[] for _ in range(B)]
    reasons = ["length"] * B
    done = [False] * B
    steps = _decode_steps(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          top_p=top_p, pad_id=pad_id, seed=seed)
    try:
        for token, logprob in steps:
            for i, (t, lp) in enumerate(zip(token.tolist(), logprob.tolist())):
                if done[i]:
                    continue  # a finished row still runs in the batch; its samples are dropped
                tokens[i].append(t)
                logprobs[i].append(lp)
                if t in stop:
                    done[i], reasons[i] = True, "stop"
            if all(done):
                break
    finally:
        steps.close()
    return GenerationOutput(tokens=tokens, logprobs=logprobs, finish_reasons=reasons)


def stream_generate(
    model: Decoder,
    prompt: list[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop_ids=(),
    pad_id: int = 0,
    seed: int | None = None,
) -> Iterator[int]:
    """Yield new token ids one at a time, the stop token included, as `generate` would return them.

    pad_id is accepted for symmetry with `generate` and unused: one prompt needs no padding.
    """
    stop = set(stop_ids)
    steps = _decode_steps(model, [prompt], max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                          top_p=top_p, pad_id=pad_id, seed=seed)
    try:
        for token, _ in steps:
            t = int(token[0])
            yield t
            if t in stop:
                return
    finally:
        steps.close()
