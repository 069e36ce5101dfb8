"""Serving under load: streaming clients against the local Serve endpoint, continuous batching on vs off, the engine
alone, Serve's own overhead, and (--kill) a replica killed mid-run.

    python -m benchmarks.serve_load                                   # decoder_small (random weights), CPU
    python -m benchmarks.serve_load --levels 1 8 32 64 --max-tokens 64
    python -m benchmarks.serve_load --checkpoint runs/align/demo      # a trained model instead
    python -m benchmarks.serve_load --model decoder_gpt2 --device-gpus 1
    python -m benchmarks.serve_load --kill                            # 2 model replicas, one killed under load
    python -m benchmarks.serve_load --backends native vllm            # also vLLM's engine (serve.backend=vllm;
                                                                      # run from a venv with the vllm extra)

Per level of concurrent clients (each sends its requests one after another, streaming, `max_tokens` fixed): time to
first token p50/p99, inter-token latency p50/p99 (per request: (last - first token time) / (tokens - 1)), aggregate
generated tokens/s and completed requests/s over the level's wall time, request latency p50 (send to last byte),
and errors. The same levels run with batching on, with batching off
(one request at a time: the baseline), through the engine alone (no HTTP, no Serve: what the model can do), and
with `--backends ... vllm` through the same ingress with vLLM's engine in the model replica ("vllm" rows).
Serve's overhead is the p50 of GET /healthz (no model work) through Serve's proxy next to the same route served by a
plain uvicorn process. Everything is bounded: `--requests-per-client` each, and `--level-timeout` seconds a level.
On a 2-core machine the clients, Serve's proxy and the replica share the CPU: compare the engine-alone and HTTP rows
to see what the HTTP path costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import ray
import torch

from benchmarks.rlhf_iteration import preset, tokenizer
from models import build_model, save_checkpoint
from models.tokenizer import Tokenizer
from pipelines.corpus.writer import ensure_corpus
from pipelines.serve.app import config_from_args, deploy, undeploy
from pipelines.serve.engine import Engine, SamplingParams

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How do I treat a cold?", "Where is Lima?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def stream_one(client: httpx.AsyncClient, url: str, question: str, max_tokens: int, headers=None) -> dict:
    """One streaming chat request: {ok, ttft, itl, tokens, error}."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "temperature": 0.8,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = last = None
    tokens, error = 0, None
    try:
        async with client.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                return {"ok": False, "error": f"HTTP {r.status_code}: {(await r.aread())[:120]!r}"}
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    error = "error event: " + chunk["error"]["message"][:80]
                elif chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
            if not done and error is None:
                error = "stream ended without [DONE]"
    except (httpx.HTTPError, OSError) as e:
        error = f"{type(e).__name__}: {e}"[:100]
    if error is not None:
        return {"ok": False, "error": error}
    latency = time.perf_counter() - start
    if first is None:  # the reply ended at once (<|end|> first): no text, one token
        return {"ok": True, "ttft": None, "itl": None, "tokens": tokens, "latency": latency}
    itl = (last - first) / (tokens - 1) if tokens > 1 else None
    return {"ok": True, "ttft": first - start, "itl": itl, "tokens": tokens, "latency": latency}


async def level(url: str, clients: int, requests_per_client: int, max_tokens: int, timeout: float) -> dict:
    results: list[dict] = []
    deadline = time.perf_counter() + timeout
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(timeout=timeout + 30, limits=limits) as client:
        async def worker(i: int):
            for j in range(requests_per_client):
                if time.perf_counter() > deadline:
                    return
                results.append(await stream_one(client, url, QUESTIONS[(i + j) % len(QUESTIONS)], max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*[worker(i) for i in range(clients)])
        wall = time.perf_counter() - start
    ok = [r for r in results if r["ok"]]
    ttft = [r["ttft"] * 1000 for r in ok if r["ttft"] is not None]
    itl = [r["itl"] * 1000 for r in ok if r["itl"] is not None]
    return {"clients": clients, "requests": len(results), "errors": len(results) - len(ok),
            "req_s": len(ok) / wall, "latency_p50": pct([r["latency"] * 1000 for r in ok], 0.5),
            "ttft_p50": pct(ttft, 0.5), "ttft_p99": pct(ttft, 0.99), "itl_p50": pct(itl, 0.5),
            "itl_p99": pct(itl, 0.99), "tok_s": sum(r["tokens"] for r in ok) / wall,
            "error_kinds": sorted({r["error"] for r in results if not r["ok"]})[:3]}


def engine_alone(path: str, clients: int, max_tokens: int, device: str) -> float:
    """Generated tokens/s with `clients` requests decoding together in the engine (no HTTP, no Serve)."""
    from pipelines import checkpoints

    loaded = checkpoints.load(path, kinds=("decoder",), purpose="the engine benchmark", device=device)
    model, tok = loaded.model, loaded.tok
    prompts = [tok.encode_chat([{"role": "user", "content": q}], add_generation_prompt=True).ids for q in QUESTIONS]

    async def run():
        engine = Engine(model, max_batch=max(clients, 1))
        try:
            start = time.perf_counter()
            requests = [engine.submit(prompts[i % len(prompts)],
                                      SamplingParams(max_new_tokens=max_tokens, temperature=0.8, seed=i))
                        for i in range(clients)]
            for r in requests:
                async for _ in r.events():
                    pass
            return sum(r.generated for r in requests) / (time.perf_counter() - start)
        finally:
            engine.close()

    return asyncio.run(run())


def serve_overhead(url: str, n: int = 300) -> tuple[float, float]:
    """p50 ms of GET /healthz through Serve, and of the same kind of route on a plain uvicorn process."""
    port = free_port()
    code = ("import uvicorn, fastapi\napp = fastapi.FastAPI()\n@app.get('/healthz')\nasync def h():\n"
            "    return {'status': 'ok', 'active': 0, 'waiting': 0}\n"
            f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning')\n")
    plain = subprocess.Popen([sys.executable, "-c", code])
    try:
        with httpx.Client(timeout=10) as client:
            for _ in range(100):
                try:
                    client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)

            def p50(target: str) -> float:
                times = []
                for _ in range(n):
                    start = time.perf_counter()
                    client.get(target).raise_for_status()
                    times.append((time.perf_counter() - start) * 1000)
                return statistics.median(times)

            return p50(url + "/healthz"), p50(f"http://127.0.0.1:{port}/healthz")
    finally:
        plain.terminate()
        plain.wait(timeout=10)


def replica_count(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    model = status.deployments.get("ModelServer") if status else None
    return model.replica_states.get("RUNNING", 0) if model else 0


async def kill_run(url: str, app: str, clients: int, max_tokens: int, duration: float, kill_at: float) -> dict:
    """Clients stream continuously; at kill_at one replica's actor is killed. Requests sent after the kill get one
    retry. -> counts of what clients saw and seconds until Serve had both model replicas again."""
    killed_at: list[float] = []
    out = {"before_kill_ok": 0, "broken_by_kill": [], "after_kill_ok": 0, "after_kill_retried_ok": 0,
           "after_kill_failed": 0}
    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        async def worker(i: int):
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                sent = time.perf_counter()
                r = await stream_one(client, url, QUESTIONS[i % len(QUESTIONS)], max_tokens)
                if killed_at and sent >= killed_at[0]:
                    if r["ok"]:
                        out["after_kill_ok"] += 1
                    elif (await stream_one(client, url, QUESTIONS[i % len(QUESTIONS)], max_tokens))["ok"]:
                        out["after_kill_retried_ok"] += 1
                    else:
                        out["after_kill_failed"] += 1
                elif r["ok"]:
                    out["before_kill_ok"] += 1
                else:
                    out["broken_by_kill"].append(r["error"])

        async def killer():
            await asyncio.sleep(kill_at)
            replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["name"].startswith(f"SERVE_REPLICA::{app}#ModelServer#")]
            victim = replicas[0]
            out["killed"] = victim["name"]
            ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
            killed_at.append(time.perf_counter())
            print(f"  killed {victim['name']} of {len(replicas)} model replicas", flush=True)
            deadline = killed_at[0] + 120
            seen_down = False
            while time.perf_counter() < deadline:
                running = await asyncio.to_thread(replica_count, app)
                seen_down = seen_down or running < 2
                if seen_down and running >= 2:
                    out["back_after_s"] = round(time.perf_counter() - killed_at[0], 1)
                    print(f"  both model replicas running again after {out['back_after_s']} s", flush=True)
                    return
                await asyncio.sleep(0.2)
            out["back_after_s"] = None  # not back within 120 s

        await asyncio.gather(killer(), *[worker(i) for i in range(clients)])
    return out


def checkpoint(args, root: Path) -> str:
    if args.checkpoint:
        return args.checkpoint
    corpus = root / "corpus"
    ensure_corpus(corpus, general_docs=600, medical_docs=20)
    tok_bytes = tokenizer(corpus)
    torch.manual_seed(0)
    model = build_model(preset(args.model, Tokenizer(tok_bytes).vocab_size, args.context))
    path = root / args.model
    save_checkpoint(str(path), model, tokenizer_model=tok_bytes, meta={"stage": "benchmark"})
    return str(path)


def app_config(path: str, port: int, name: str, args, *extra: str):
    return config_from_args({"checkpoint": path, "serve.port": str(port), "serve.app_name": name,
                             "serve.route_prefix": f"/{name}", "serve.num_cpus": str(args.replica_cpus),
                             "serve.num_gpus": str(args.device_gpus), "serve.engine.max_batch": str(max(args.levels)),
                             "serve.max_ongoing_requests": str(max(args.levels) * 2),
                             "serve.engine.threads": str(args.threads), **dict(e.split("=", 1) for e in extra)})


def print_table(rows: list[dict]) -> None:
    print(f"\n{'mode':<14}{'clients':>8}{'reqs':>6}{'errors':>7}{'TTFT p50':>10}{'p99':>8}{'ITL p50':>9}{'p99':>8}"
          f"{'lat p50':>9}{'req/s':>7}{'tok/s':>9}{'x 1 client':>11}")
    base = {}
    for r in rows:
        base.setdefault(r["mode"], r["tok_s"] if r["clients"] == 1 else None)
        ratio = r["tok_s"] / base[r["mode"]] if base[r["mode"]] else float("nan")
        ms = lambda v: f"{v:.0f}" if v == v else "-"  # noqa: E731 - nan -> "-"
        print(f"{r['mode']:<14}{r['clients']:>8}{r.get('requests', '-'):>6}{r.get('errors', '-'):>7}"
              f"{ms(r.get('ttft_p50', float('nan'))):>10}{ms(r.get('ttft_p99', float('nan'))):>8}"
              f"{ms(r.get('itl_p50', float('nan'))):>9}{ms(r.get('itl_p99', float('nan'))):>8}"
              f"{ms(r.get('latency_p50', float('nan'))):>9}{r.get('req_s', float('nan')):>7.2f}"
              f"{r['tok_s']:>9.0f}{ratio:>10.1f}x")
        for kind in r.get("error_kinds", []):
            print(f"{'':<14}error: {kind}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a decoder checkpoint (default: random decoder_small)")
    parser.add_argument("--model", default="decoder_small")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--off-levels", type=int, nargs="*", default=[1, 8, 32], help="levels with batching off")
    parser.add_argument("--backends", nargs="+", choices=["native", "vllm"], default=["native"],
                        help="model engines to measure (serve.backend); vllm needs the vllm extra installed")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--level-timeout", type=float, default=60)
    parser.add_argument("--replica-cpus", type=float, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the replica and the engine row")
    parser.add_argument("--device-gpus", type=float, default=0)
    parser.add_argument("--kill", action="store_true", help="instead: 2 model replicas, one killed mid-run")
    args = parser.parse_args()
    device = "cuda" if args.device_gpus else "cpu"
    ray.init(include_dashboard=False)
    from ray import serve

    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint(args, Path(tmp))
        print(f"model {path}; {args.max_tokens} tokens per reply; replica {args.replica_cpus} CPU, "
              f"{args.threads} torch thread(s), GPUs {args.device_gpus}", flush=True)
        if args.kill:
            kill_experiment(path, args)
        else:
            load_levels(path, args, device)
        serve.shutdown()


def load_levels(path: str, args, device: str) -> None:
    rows = []
    torch.set_num_threads(args.threads)
    native = "native" in args.backends
    for clients in args.levels if native else []:
        rows.append({"mode": "engine alone", "clients": clients,
                     "tok_s": engine_alone(path, clients, args.max_tokens, device)})
        print(f"  engine alone, {clients} clients: {rows[-1]['tok_s']:.0f} tok/s", flush=True)
    port = free_port()
    serve_p50 = plain_p50 = float("nan")
    modes = [("batching on", "on", args.levels, ["serve.engine.batching=true"]),
             ("batching off", "off", args.off_levels, ["serve.engine.batching=false"])] if native else []
    if "vllm" in args.backends:
        modes.append(("vllm", "vllm", args.levels, ["serve.backend=vllm"]))
    for mode, name, levels, extra in modes:
        if not levels:
            continue
        cfg = app_config(path, port, name, args, *extra)
        start = time.perf_counter()
        url = deploy(cfg)
        print(f"  {mode}: app up in {time.perf_counter() - start:.0f} s", flush=True)
        asyncio.run(level(url, 1, 1, 8, args.level_timeout))  # warm-up
        if mode == "batching on":
            serve_p50, plain_p50 = serve_overhead(url)
        for clients in levels:
            row = asyncio.run(level(url, clients, args.requests_per_client, args.max_tokens, args.level_timeout))
            rows.append({"mode": mode, **row})
            print(f"  {mode}, {clients} clients: {row['tok_s']:.0f} tok/s, {row['errors']} errors", flush=True)
        undeploy(cfg)
    print_table(rows)
    on = {r["clients"]: r["tok_s"] for r in rows if r["mode"] == "batching on"}
    if 1 in on and 32 in on:
        print(f"\nbatching on, 32 clients vs 1: {on[32] / on[1]:.1f}x aggregate tokens/s (target >= 10x)")
    if serve_p50 == serve_p50:
        print(f"Serve overhead: GET /healthz p50 {serve_p50:.2f} ms through Serve's proxy vs {plain_p50:.2f} ms on "
              f"a plain uvicorn process (target: Serve p50 <= 5 ms)")


def kill_experiment(path: str, args) -> None:
    """2 model replicas under 16 streaming clients; one replica's actor is killed after 8 s of a 30 s run."""
    cfg = app_config(path, free_port(), "kill", args, "serve.num_replicas=2", f"serve.num_cpus={args.replica_cpus / 2}")
    url = deploy(cfg)
    asyncio.run(level(url, 2, 1, 8, args.level_timeout))
    out = asyncio.run(kill_run(url, "kill", 16, args.max_tokens, duration=30, kill_at=8))
    broken = out.pop("broken_by_kill")
    print(f"\nkill one of 2 model replicas under 16 streaming clients: {json.dumps(out)}\nrequests that were running "
          f"when it died: {len(broken)} ended with an error ({sorted(set(broken))[:3]})")
    undeploy(cfg)


if __name__ == "__main__":
    main()
