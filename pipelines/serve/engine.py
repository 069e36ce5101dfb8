"""Continuous batching: one decode loop per replica over every request in flight.

How a request lives:
1. **Enters.** `Engine.submit(prompt_ids, SamplingParams)` checks the settings (`models.generate.check_sampling`)
   and the context (prompt + max_new_tokens <= the KV cache's max_len), and puts a `Request` at the back of the
   waiting queue; a full queue raises `EngineOverloaded` (the API answers 429 with Retry-After).
2. **Waits.** Between two decode steps the loop moves waiting requests, oldest first, into free KV-cache slots
   (`models.decoder.KVCache`, one slot per sequence with its own length) and prefills them together in one
   right-padded forward (up to `prefill_tokens` padded tokens each); their first tokens are sampled at once. A request that arrives while others decode therefore gets its
   first token after at most one step of theirs, not after they end (static batching would make it wait).
3. **Decodes.** Each step is one forward over all active slots, one new token per slot at its own position (the
   cache's ragged mode), then one sample per row with that request's temperature / top-k / top-p and its own seeded
   generator, so a request's tokens do not depend on who it shares the batch with (greedy ones up to float
   rounding). Tokens reach the request through its asyncio queue (`call_soon_threadsafe`); a consumer that is
   slower than the loop finds several tokens waiting and sends them in one chunk.
4. **Leaves.** On a stop token ("stop"), at its token cap ("length"), or when cancelled (the client disconnected,
   or the API found a stop string) — its slot is freed before the next step, so the batch shrinks at once and a
   waiting request can take the slot.

The loop runs in its own thread: torch releases the GIL inside its kernels, so the replica's event loop keeps
answering HTTP while the model computes. With nothing to do the thread sleeps on a condition. An exception inside a
step fails the requests of that step with an error event and frees their slots; the loop itself goes on (a
replica stays up). `batching=False` gives the loop one slot: requests are served one at a time, in order, which is
the baseline the load benchmark compares against.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.decoder import Decoder
from models.generate import check_sampling, sample_next


class EngineOverloaded(RuntimeError):
    """The waiting queue is full: the caller should retry later."""


class EngineError(RuntimeError):
    """A step failed while this request was in it (the message says why); the engine itself keeps running."""


@dataclass
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()


@dataclass
class Event:
    """One produced token (`token` with its raw log-prob), and on the request's last event its `finish_reason`
    ("stop", "length", "cancelled"); or an `error` (no token)."""
    token: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass(eq=False)
class Request:
    id: int
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.perf_counter)
    generated: int = 0
    last_token: int | None = None
    slot: int | None = None
    cancelled: bool = False
    done: bool = False
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Leave the batch at the next step (thread-safe; idempotent)."""
        self.cancelled = True

    async def events(self):
        """Yield lists of events as they come (all that are waiting at once); ends after the last one."""
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            yield batch
            if batch[-1].finish_reason is not None or batch[-1].error is not None:
                return

    def _emit(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # the request's event loop is closed: nobody is listening any more
            self.cancelled = True


class Engine:
    """Continuous batching over one `Decoder` (see the module docstring). Thread-safe `submit`; `close` stops it."""

    def __init__(self, model: Decoder, *, max_batch: int = 32, batching: bool = True, max_waiting: int = 256,
                 max_len: int | None = None, prefill_tokens: int = 4096):
        self.model = model.eval()
        self.device = model.model.embed_tokens.weight.device
        self.max_len = max_len or model.cfg.max_seq_len
        self.slots = max_batch if batching else 1
        self.batching = batching
        self.max_waiting = max_waiting
        self.prefill_tokens = prefill_tokens  # padded prompt tokens in one prefill forward
        self.cache = model.make_kv_cache(self.slots, self.max_len)
        self._free = list(range(self.slots))
        self._active: dict[int, Request] = {}  # slot -> request, in admission order
        self._waiting: collections.deque[Request] = collections.deque()
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self.steps = 0
        self.tokens = 0
        self.max_active = 0  # the largest batch so far (for tests and the benchmark)
        self.cancelled = 0  # requests that left before their end (client gone, stop string)
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)
        self._thread.start()

    # ---- the caller's side (any thread, usually the replica's event loop) ----

    def submit(self, prompt: list[int], params: SamplingParams, loop: asyncio.AbstractEventLoop | None = None
               ) -> Request:
        check_sampling(temperature=params.temperature, top_k=params.top_k, top_p=params.top_p,
                       max_new_tokens=params.max_new_tokens)
        if not prompt:
            raise ValueError("the prompt has no tokens")
        if len(prompt) + params.max_new_tokens > self.max_len:
            raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds "
                             f"the model's context of {self.max_len} tokens")
        request = Request(id=next(self._ids), prompt=list(prompt), params=params,
                          loop=loop or asyncio.get_running_loop())
        if params.seed is not None:
            request.generator = torch.Generator(self.device).manual_seed(params.seed)
        with self._cond:
            if self._closed:
                raise EngineError("the engine is shut down")
            if len(self._waiting) >= self.max_waiting:
                raise EngineOverloaded(f"{len(self._waiting)} requests are already waiting (limit {self.max_waiting})")
            self._waiting.append(request)
            self._cond.notify()
        return request

    def stats(self) -> dict:
        with self._cond:
            return {"active": len(self._active), "waiting": len(self._waiting), "slots": self.slots,
                    "batching": self.batching, "steps": self.steps, "tokens": self.tokens,
                    "max_active": self.max_active, "cancelled": self.cancelled, "context": self.max_len}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    # ---- the decode loop's side (its own thread) ----

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._active:
                    self._cond.wait()
                if self._closed:
                    break
            self._retire_cancelled()
            self._admit()
            if self._active:
                self._decode_step()
        for request in [*self._active.values(), *self._waiting]:
            request._emit(Event(error="the server is shutting down"))

    def _retire_cancelled(self) -> None:
        with self._cond:
            for request in [r for r in self._waiting if r.cancelled]:
                self._waiting.remove(request)
            for request in [r for r in self._active.values() if r.cancelled]:
                self.cancelled += 1
                self._finish(request, Event(finish_reason="cancelled"))

    def _admit(self) -> None:
        """Move waiting requests into free slots and prefill them together (right-padded: causal attention never
        lets a real token see the padding after it, and each slot then keeps only its real positions)."""
        admitted = []
        with self._cond:
            while self._free and self._waiting:
                request = self._waiting.popleft()
                if request.cancelled:
                    continue
                request.slot = self._free.pop(0)
                self._active[request.slot] = request
                admitted.append(request)
            self.max_active = max(self.max_active, len(self._active))
        group, tokens = [], 0
        for request in admitted:  # groups of at most prefill_tokens padded tokens
            if group and (len(group) + 1) * max(tokens, len(request.prompt)) > self.prefill_tokens:
                self._prefill_group(group)
                group, tokens = [], 0
            group.append(request)
            tokens = max(tokens, len(request.prompt))
        if group:
            self._prefill_group(group)

    def _prefill_group(self, group: list[Request]) -> None:
        try:
            self._prefill(group)
        except Exception as e:  # noqa: BLE001 - these requests fail, the loop goes on
            for request in group:
                self._finish(request, Event(error=f"prefill failed: {type(e).__name__}: {e}"))

    @torch.inference_mode()
    def _prefill(self, group: list[Request]) -> None:
        slots = [r.slot for r in group]
        for slot in slots:
            self.cache.free(slot)
        self.cache.select(slots)
        lengths = [len(r.prompt) for r in group]
        ids = torch.zeros(len(group), max(lengths), dtype=torch.long)
        for i, r in enumerate(group):
            ids[i, :lengths[i]] = torch.tensor(r.prompt, dtype=torch.long)
        hidden = self.model.hidden_states(ids.to(self.device), kv_cache=self.cache)  # (B, P, D), causal
        last = hidden[torch.arange(len(group), device=self.device), torch.tensor(lengths, device=self.device) - 1]
        for slot, n in zip(slots, lengths):
            self.cache.truncate(slot, n)
        self._deliver(group, self.model.lm_logits(last).float())  # (B, V)

    @torch.inference_mode()
    def _decode_step(self) -> None:
        requests = list(self._active.values())
        try:
            self.cache.select([r.slot for r in requests])
            ids = torch.tensor([[r.last_token] for r in requests], dtype=torch.long, device=self.device)  # (B, 1)
            hidden = self.model.hidden_states(ids, kv_cache=self.cache)  # (B, 1, D)
            logits = self.model.lm_logits(hidden[:, -1]).float()  # (B, V)
            self.steps += 1
            self._deliver(requests, logits)
        except Exception as e:  # noqa: BLE001 - fail this step's requests, keep serving
            for request in requests:
                if not request.done:
                    self._finish(request, Event(error=f"decoding failed: {type(e).__name__}: {e}"))

    def _deliver(self, requests: list[Request], logits) -> None:
        """Sample one token per row (each with its request's settings), hand it over, retire finished requests."""
        tokens = torch.empty(len(requests), dtype=torch.long, device=logits.device)
        greedy = [i for i, r in enumerate(requests) if r.params.temperature == 0]
        if greedy:
            tokens[greedy] = logits[greedy].argmax(dim=-1)
        for i, r in enumerate(requests):
            if r.params.temperature != 0:
                tokens[i] = sample_next(logits[i:i + 1], temperature=r.params.temperature, top_k=r.params.top_k,
                                        top_p=r.params.top_p, generator=r.generator)[0]
        logprobs = F.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
        out = []
        for r, token, logprob in zip(requests, tokens.tolist(), logprobs.tolist()):
            r.generated += 1
            r.last_token = token
            self.tokens += 1
            reason = None
            if token in r.params.stop_ids:
                reason = "stop"
            elif r.generated >= r.params.max_new_tokens:
                reason = "length"
            if reason is not None:
                self._release(r)
            out.append((r, Event(token=token, logprob=logprob, finish_reason=reason)))
        emit_all(out)

    def _finish(self, request: Request, event: Event) -> None:
        """Give the request's slot back, then send its last event."""
        self._release(request)
        request._emit(event)  # after the slot is back: whoever sees the last event sees the batch without it

    def _release(self, request: Request) -> None:
        request.done = True
        with self._cond:
            if request.slot is not None and self._active.get(request.slot) is request:
                del self._active[request.slot]
                self.cache.free(request.slot)
                self._free.append(request.slot)
                self._free.sort()


def emit_all(pairs: list[tuple[Request, Event]]) -> None:
    """Hand a step's events to their requests with one wake-up per event loop (not one per request: at 32
    requests a step, per-request wake-ups cost the replica's loop more than the step itself)."""
    by_loop: dict = {}
    for request, event in pairs:
        by_loop.setdefault(request.loop, []).append((request, event))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_put_all, items)
        except RuntimeError:  # that event loop is closed: nobody is listening any more
            for request, _ in items:
                request.cancelled = True


def _put_all(items: list[tuple[Request, Event]]) -> None:
    for request, event in items:
        request.queue.put_nowait(event)
