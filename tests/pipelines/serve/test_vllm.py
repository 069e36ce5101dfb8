"""serve.backend=vllm: vLLM's engine behind the same ingress, on real Ray Serve, through the official `openai`
client — greedy replies equal to the native engine's (`models.generate`) for the same prompts, chat streamed and
not and completions, a stop at <|end|>, seeded sampling, a stop string aborting the rest in the engine, /healthz,
/stats and /v1/models; and the one-line refusals before Ray starts.

Needs vLLM (the `vllm` extra): `make test-vllm` builds .venv-vllm and runs this file with LMLIFE_REQUIRE_VLLM=1, where
a missing vllm fails the tests. In the plain `make test` venv (no vllm) they are skipped, and the refusal of
serve.backend=vllm without vllm runs instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time

import httpx
import pytest

from chat64 import COUNT, PAIRS, TEXT, build_chat64
from models.generate import generate
from tests_conf import ROOT

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
REQUIRED = os.environ.get("LMLIFE_REQUIRE_VLLM") == "1"


@pytest.fixture(scope="module")
def need_vllm():
    if not HAVE_VLLM:
        message = "vllm is not importable here (install the extra: make test-vllm)"
        if REQUIRED:
            pytest.fail(message + " but LMLIFE_REQUIRE_VLLM=1", pytrace=False)
        pytest.skip(message)


@pytest.fixture(scope="module")
def chat64(tmp_path_factory):
    """(checkpoint dir, loaded model, tokenizer) of the head_dim-64 chat decoder trained in-process (~5 s)."""
    from models import load_checkpoint

    path = str(tmp_path_factory.mktemp("chat64") / "ckpt")
    tok = build_chat64(path)
    model, _ = load_checkpoint(path)
    return path, model.eval(), tok


@pytest.fixture(scope="module")
def vllm_app(need_vllm, ray_cluster, serve_settings, chat64):
    """(config, URL) of the app with serve.backend=vllm on the session cluster; deleted after the module."""
    from ray import serve

    from pipelines.serve.app import deploy, undeploy

    cfg = serve_settings(chat64[0], "serve.backend=vllm", "serve.model_name=chat64", "serve.generation.max_tokens=32")
    start = time.perf_counter()
    url = deploy(cfg)
    print(f"vLLM app up in {time.perf_counter() - start:.1f} s", flush=True)
    yield cfg, url
    undeploy(cfg)
    serve.shutdown()


@pytest.fixture(scope="module")
def client(vllm_app):
    import openai

    return openai.OpenAI(base_url=vllm_app[1] + "/v1", api_key="none", max_retries=0, timeout=120)


def native(chat64, prompt: list[int], max_tokens: int) -> tuple[str, str]:
    """(text, finish reason) of the native engine's greedy decode of `prompt` with the one stop rule."""
    _, model, tok = chat64
    out = generate(model, [prompt], max_new_tokens=max_tokens, temperature=0, stop_ids=list(tok.stop_ids), pad_id=0)
    return tok.decode([t for t in out.tokens[0] if t not in tok.stop_ids]), out.finish_reasons[0]


QUESTIONS = [q for q, _ in PAIRS[:4]] + ["Tell me about the moon."]


def test_greedy_chat_equals_the_native_engine_streamed_and_not(client, chat64):
    tok = chat64[2]
    for question in QUESTIONS:
        messages = [{"role": "user", "content": question}]
        text, finish = native(chat64, tok.encode_chat(messages, add_generation_prompt=True).ids, 32)
        whole = client.chat.completions.create(model="chat64", messages=messages, temperature=0, max_tokens=32)
        assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (text, finish), question
        pieces, reasons = [], []
        for chunk in client.chat.completions.create(model="chat64", messages=messages, temperature=0,
                                                    max_tokens=32, stream=True):
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                reasons.append(chunk.choices[0].finish_reason)
        assert ("".join(pieces), reasons[-1]) == (text, finish), question
    # The trained answers end at <|end|>: a stop, not the token cap, and the marker is not in the text.
    for question, answer in PAIRS[:4]:
        reply = client.chat.completions.create(model="chat64", messages=[{"role": "user", "content": question}],
                                               max_tokens=48)
        assert reply.choices[0].message.content == answer and reply.choices[0].finish_reason == "stop"


def test_completions_equal_the_native_engine(client, chat64):
    tok = chat64[2]
    for prompt in [TEXT[0][:15], TEXT[1][:12], "Paris"]:
        text, finish = native(chat64, tok.encode(prompt, bos=True), 20)
        reply = client.completions.create(model="chat64", prompt=prompt, temperature=0, max_tokens=20)
        assert (reply.choices[0].text, reply.choices[0].finish_reason) == (text, finish), prompt


def test_seeded_sampling_repeats_and_a_stop_string_aborts_the_rest(client, vllm_app):
    ask = dict(model="chat64", messages=[{"role": "user", "content": "Tell me about the moon."}], max_tokens=24)
    first = client.chat.completions.create(temperature=1.0, seed=7, **ask).choices[0].message.content
    again = client.chat.completions.create(temperature=1.0, seed=7, **ask).choices[0].message.content
    assert first == again
    before = httpx.get(vllm_app[1] + "/stats").json()["cancelled"]
    # The count runs to 40 (~80 tokens): the stop string ends the reply while vLLM still decodes it.
    cut = client.chat.completions.create(model="chat64", messages=[{"role": "user", "content": COUNT[0]}],
                                         temperature=0, max_tokens=100, stop=[" 5 "])
    assert cut.choices[0].message.content == "1 2 3 4" and cut.choices[0].finish_reason == "stop"
    deadline = time.monotonic() + 10  # the ingress cancels the replica's stream; the abort follows at once
    while httpx.get(vllm_app[1] + "/stats").json()["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.2)
    stats = httpx.get(vllm_app[1] + "/stats").json()
    assert stats["cancelled"] == before + 1 and stats["active"] == 0 and stats["engine_requests"] == 0


def test_healthz_stats_and_models(client, vllm_app):
    url = vllm_app[1]
    assert httpx.get(url + "/healthz").json()["status"] == "ok"
    stats = httpx.get(url + "/stats").json()
    assert stats["backend"] == "vllm" and stats["slots"] == 8 and stats["context"] == 128
    assert stats["tokens"] > 0 and stats["requests"] > 0 and stats["engine_requests"] == 0
    assert [m.id for m in client.models.list().data] == ["chat64"]


def serve_command(checkpoint: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.serve", f"checkpoint={checkpoint}", "serve.backend=vllm",
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_without_vllm_the_backend_is_refused_in_one_line_before_ray(tmp_path):
    if HAVE_VLLM:
        pytest.skip("vllm is installed here")
    path = str(tmp_path / "ckpt")
    build_chat64(path, steps=0)
    run = serve_command(path)
    assert run.returncode == 2, run.stderr
    assert "serve.backend=vllm needs vLLM" in run.stderr and "pip install -e '.[vllm]'" in run.stderr
    assert "Traceback" not in run.stderr and "Started a local Ray" not in run.stderr + run.stdout


def test_heads_too_small_for_vllms_cpu_attention_are_refused_in_one_line(need_vllm, tmp_path):
    from pipelines.serve.vllm_engine import _cpu_build

    if not _cpu_build():
        pytest.skip("vLLM's GPU build: its attention kernels take other head sizes")
    path = str(tmp_path / "ckpt")
    build_chat64(path, steps=0, d_model=64, n_head=4)  # head_dim 16, as the tiny test configs
    run = serve_command(path)
    assert run.returncode == 2, run.stderr
    assert "this checkpoint's have 16" in run.stderr and "Traceback" not in run.stderr


def test_an_unknown_backend_is_refused_by_the_app_builder(tmp_path):
    from pipelines.errors import ConfigError
    from pipelines.serve.app import build

    path = str(tmp_path / "ckpt")
    build_chat64(path, steps=0)
    with pytest.raises(ConfigError, match="serve.backend=tgi is not one of native, vllm"):
        build({"checkpoint": path, "serve.backend": "tgi"})
