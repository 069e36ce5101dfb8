import pytest
import torch
import torch.nn.functional as F

from models.generate import filter_logits, generate, left_pad, sample_next, stream_generate
from tiny_models import VOCAB

PROMPTS = [[5, 17, 3], [40, 2, 9, 11, 60, 7, 1], [8]]


def naive_greedy(model, prompt, n):
    """Argmax loop that recomputes the whole sequence every step, no cache, no padding."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(prompt):]


def test_greedy_equals_naive_loop_and_is_deterministic(decoder):
    out = generate(decoder, PROMPTS, max_new_tokens=10, temperature=0, pad_id=0)
    assert out.tokens == [naive_greedy(decoder, p, 10) for p in PROMPTS]
    assert out.finish_reasons == ["length"] * 3
    assert generate(decoder, PROMPTS, max_new_tokens=10, temperature=0, pad_id=0) == out


def test_seeded_sampling_is_reproducible(decoder):
    torch.manual_seed(123)
    a = generate(decoder, PROMPTS, max_new_tokens=12, temperature=1.0, pad_id=0, seed=7)
    torch.manual_seed(456)  # the global RNG does not matter
    b = generate(decoder, PROMPTS, max_new_tokens=12, temperature=1.0, pad_id=0, seed=7)
    c = generate(decoder, PROMPTS, max_new_tokens=12, temperature=1.0, pad_id=0, seed=8)
    assert a == b and a.tokens != c.tokens


@pytest.mark.parametrize("temperature, top_k", [(1.3, 20), (0.7, 0)])
def test_logprobs_are_of_the_distribution_sampled_from(decoder, temperature, top_k):
    # what an RLHF learner must score a sampled token with: softmax(logits / temperature), filtered like the draw
    out = generate(decoder, PROMPTS, max_new_tokens=8, temperature=temperature, top_k=top_k, pad_id=0, seed=1)
    with torch.no_grad():
        for prompt, tokens, logprobs in zip(PROMPTS, out.tokens, out.logprobs):
            seq = torch.tensor([prompt + tokens])
            logits = filter_logits(decoder(seq)[0, len(prompt) - 1 : -1] / temperature, top_k=top_k)
            expected = F.log_softmax(logits, dim=-1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
            torch.testing.assert_close(torch.tensor(logprobs), expected, rtol=0, atol=1e-5)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).log_softmax(-1)
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False, False]]
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p)).tolist()[0]  # noqa: E731
    assert kept(0.4) == [True, False, False, False]
    assert kept(0.8) == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, True, False]
    assert kept(1.0) == [True] * 4


def test_sampling_support_is_restricted():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, VOCAB).expand(2000, VOCAB)
    top3 = set(logits[0].topk(3).indices.tolist())
    drawn = sample_next(logits, temperature=2.0, top_k=3, generator=g)
    assert set(drawn.tolist()) == top3  # all of the top 3 and nothing else
    probs = logits[0].softmax(-1)
    nucleus_size = int((probs.sort(descending=True).values.cumsum(0) < 0.5).sum()) + 1
    nucleus = set(probs.topk(nucleus_size).indices.tolist())
    assert set(sample_next(logits, temperature=1.0, top_p=0.5, generator=g).tolist()) <= nucleus


def test_top_k_1_sampling_is_greedy(decoder):
    greedy = generate(decoder, PROMPTS, max_new_tokens=6, temperature=0, pad_id=0)
    sampled = generate(decoder, PROMPTS, max_new_tokens=6, temperature=0.8, top_k=1, pad_id=0, seed=3)
    assert sampled.tokens == greedy.tokens


def test_stop_tokens_finish_each_sequence(decoder):
    free = generate(decoder, PROMPTS, max_new_tokens=12, temperature=1.0, pad_id=0, seed=5)
    stop = free.tokens[0][3]
    out = generate(decoder, PROMPTS, max_new_tokens=12, temperature=1.0, pad_id=0, seed=5, stop_ids=[stop])
    for tokens, free_tokens, reason in zip(out.tokens, free.tokens, out.finish_reasons):
        if stop in free_tokens:
            end = free_tokens.index(stop) + 1
            assert tokens == free_tokens[:end] and reason == "stop"  # the stop token is included
        else:
            assert tokens == free_tokens and reason == "length"
    assert out.finish_reasons[0] == "stop" and len(out.tokens[0]) <= 4
    assert [len(lp) for lp in out.logprobs] == [len(t) for t in out.tokens]


def test_stream_matches_generate(decoder):
    out = generate(decoder, [PROMPTS[1]], max_new_tokens=9, temperature=0.9, top_p=0.9, pad_id=0, seed=2)
    streamed = list(stream_generate(decoder, PROMPTS[1], max_new_tokens=9, temperature=0.9, top_p=0.9, seed=2))
    assert streamed == out.tokens[0]
    stop = streamed[4]
    stopped = list(stream_generate(decoder, PROMPTS[1], max_new_tokens=9, temperature=0.9, top_p=0.9, seed=2,
                                   stop_ids={stop}))
    assert stopped == streamed[: streamed.index(stop) + 1]


def test_generate_restores_training_mode(decoder):
    decoder.train()
    generate(decoder, PROMPTS, max_new_tokens=2, temperature=0, pad_id=0)
    assert decoder.training


def test_logprobs_match_a_left_padded_batch_forward(decoder):
    # what an RLHF learner recomputes: prompt + response left-padded into one batch, positions from the mask
    out = generate(decoder, PROMPTS, max_new_tokens=5, temperature=1.0, pad_id=0, seed=4)
    ids, mask = left_pad([p + t for p, t in zip(PROMPTS, out.tokens)], pad_id=0)
    with torch.no_grad():
        logp = F.log_softmax(decoder(ids, attention_mask=mask)[:, -6:-1], dim=-1)  # (B, 5, V)
    taken = logp.gather(-1, ids[:, -5:, None]).squeeze(-1)
    torch.testing.assert_close(taken, torch.tensor(out.logprobs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -0.5}, "temperature must be a finite number >= 0.*-0.5"),
    ({"temperature": float("nan")}, "temperature.*nan"),
    ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
    ({"top_p": -1}, "top_p.*-1"),
    ({"top_p": 1.5}, "top_p.*1.5"),
    ({"top_k": -2}, "top_k.*-2"),
    ({"max_new_tokens": 0}, "max_new_tokens.*0"),
])
def test_settings_nothing_can_be_sampled_from_are_refused(decoder, kwargs, message):
    args = {"max_new_tokens": 3, "temperature": 1.0, "pad_id": 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(decoder, [[1, 2, 3]], **args)
    with pytest.raises(ValueError, match=message):
        list(stream_generate(decoder, [1, 2, 3], **args))
