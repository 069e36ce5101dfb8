"""The continuous-batching engine on the session's trained tiny decoder (no Serve): batched replies equal
`models.generate` alone, a request arriving mid-decode joins the running batch, a cancelled request frees its slot
at once, batching off serves one at a time, a full queue is refused, and bad settings are refused by name."""

from __future__ import annotations

import asyncio

import pytest

from models import load_checkpoint
from models.generate import generate
from pipelines.serve.engine import Engine, EngineOverloaded, SamplingParams

PROMPTS = [[1, 40, 41, 42], [1, 7, 8, 9, 10, 11, 12, 13], [1, 99], [1, 5, 6, 300, 301, 302]]


@pytest.fixture(scope="module")
def model(chat_checkpoint):
    return load_checkpoint(chat_checkpoint)[0].eval()


async def collect(request):
    tokens, reasons = [], []
    async for events in request.events():
        tokens += [e.token for e in events if e.token is not None]
        reasons += [e.finish_reason for e in events if e.finish_reason]
    return tokens, reasons[-1]


def run(engine_kwargs, model, coro_fn):
    async def main():
        engine = Engine(model, **engine_kwargs)
        try:
            return await coro_fn(engine)
        finally:
            engine.close()
    return asyncio.run(main())


def test_concurrent_requests_batched_together_equal_generate_alone(model):
    alone = [generate(model, [p], max_new_tokens=20, temperature=0, pad_id=0).tokens[0] for p in PROMPTS]
    sampled = generate(model, [PROMPTS[0]], max_new_tokens=20, temperature=0.9, top_p=0.9, pad_id=0, seed=7)

    async def go(engine):
        greedy = [engine.submit(p, SamplingParams(max_new_tokens=20, temperature=0)) for p in PROMPTS]
        seeded = engine.submit(PROMPTS[0], SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.9, seed=7))
        outs = await asyncio.gather(*[collect(r) for r in [*greedy, seeded]])
        return outs, engine.stats()

    outs, stats = run({"max_batch": 8}, model, go)
    assert [t for t, _ in outs[:4]] == alone
    assert outs[4][0] == sampled.tokens[0]  # a seeded sample does not depend on its batch neighbours
    assert all(reason == "length" for _, reason in outs)
    assert stats["max_active"] == 5 and stats["active"] == 0


def test_a_request_arriving_mid_decode_gets_its_first_token_before_the_running_one_ends(model):
    async def go(engine):
        order = []
        long = engine.submit(PROMPTS[0], SamplingParams(max_new_tokens=300, temperature=0))
        events = long.events()
        await events.__anext__()  # the long request is decoding
        short = engine.submit(PROMPTS[1], SamplingParams(max_new_tokens=3, temperature=0))

        async def drain(name, it):
            async for batch in it:
                order.extend((name, e.finish_reason) for e in batch)

        await asyncio.gather(drain("long", events), drain("short", short.events()))
        return order

    order = run({"max_batch": 4, "max_len": 320}, model, go)
    assert order.index(("short", None)) < order.index(("long", "length"))
    assert order.index(("short", "length")) < order.index(("long", "length"))


def test_a_cancelled_request_leaves_the_batch_and_frees_its_slot(model):
    async def go(engine):
        running = [engine.submit(p, SamplingParams(max_new_tokens=300, temperature=0)) for p in PROMPTS[:2]]
        its = [r.events() for r in running]
        for it in its:
            await it.__anext__()
        before = engine.stats()["active"]
        running[0].cancel()
        tokens, reason = await collect_rest(its[0])
        after = engine.stats()["active"]
        await collect_rest(its[1])
        return before, reason, after, running[0].generated

    async def collect_rest(it):
        reasons = []
        async for batch in it:
            reasons += [e.finish_reason for e in batch if e.finish_reason]
        return None, reasons[-1]

    before, reason, after, generated = run({"max_batch": 4, "max_len": 320}, model, go)
    assert (before, reason, after) == (2, "cancelled", 1) and generated < 300


def test_batching_off_serves_one_request_at_a_time_in_order(model):
    async def go(engine):
        requests = [engine.submit(p, SamplingParams(max_new_tokens=5, temperature=0)) for p in PROMPTS]
        outs = await asyncio.gather(*[collect(r) for r in requests])
        return outs, engine.stats()

    outs, stats = run({"batching": False}, model, go)
    assert stats["slots"] == 1 and stats["max_active"] == 1
    assert [t for t, _ in outs] == [generate(model, [p], max_new_tokens=5, temperature=0, pad_id=0).tokens[0]
                                    for p in PROMPTS]


def test_a_full_queue_and_bad_settings_are_refused(model):
    async def go(engine):
        running = engine.submit(PROMPTS[0], SamplingParams(max_new_tokens=300, temperature=0))
        await running.events().__anext__()  # it holds the one slot
        engine.submit(PROMPTS[1], SamplingParams(max_new_tokens=300, temperature=0))  # waits (one slot)
        with pytest.raises(EngineOverloaded, match="limit 1"):
            engine.submit(PROMPTS[2], SamplingParams(max_new_tokens=5))
        with pytest.raises(ValueError, match="top_p must be in"):
            engine.submit(PROMPTS[2], SamplingParams(max_new_tokens=5, top_p=0.0))
        with pytest.raises(ValueError, match="exceeds the model's context of 320 tokens"):
            engine.submit(PROMPTS[2], SamplingParams(max_new_tokens=400))
        return True

    assert run({"batching": False, "max_waiting": 1, "max_len": 320}, model, go)
