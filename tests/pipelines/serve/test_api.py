"""The OpenAI-compatible API on real Ray Serve (the session cluster) with the session's trained tiny decoder: the
official `openai` client streaming and not, greedy replies equal to `models.generate`, concurrent requests equal to
alone, every bad input answered with an error object (and the replica still up), the context rule, stop strings,
the API key, a request joining a running decode, and a disconnected stream freeing its slot."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time

import httpx
import pytest

from models import load_checkpoint
from models.generate import generate
from models.tokenizer import Tokenizer

QUESTIONS = ["What is the capital of France?", "Who wrote Hamlet?", "How do I treat a cold?", "What is 2 plus 2?",
             "Tell me about the moon.", "Where is Lima?"]
KEY_ENV = "LMLIFE_TEST_API_KEY"


@pytest.fixture(scope="module")
def local(chat_checkpoint):
    model, _ = load_checkpoint(chat_checkpoint)
    with open(os.path.join(chat_checkpoint, "tokenizer.model"), "rb") as f:
        return model.eval(), Tokenizer(f.read())


def expected_chat(local, messages, max_tokens):
    """The greedy reply `models.generate` gives for the conversation, as text."""
    model, tok = local
    prompt = tok.encode_chat(messages, add_generation_prompt=True).ids
    out = generate(model, [prompt], max_new_tokens=max_tokens, temperature=0, stop_ids=[tok.end_id], pad_id=0)
    tokens = out.tokens[0]
    return tok.decode([t for t in tokens if t != tok.end_id]), out.finish_reasons[0], len(prompt), len(tokens)


def ask(question):
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def keyed(served, serve_settings, long_checkpoint):
    """A second app on the same proxy: the long-context copy, behind an API key."""
    from pipelines.serve.app import deploy, undeploy

    cfg, _ = served
    os.environ[KEY_ENV] = "s3cret-key"
    long_cfg = serve_settings(long_checkpoint, f"serve.port={cfg.serve.port}", "serve.app_name=long",
                            "serve.route_prefix=/long", f"serve.api_key_env={KEY_ENV}", "serve.num_cpus=0.25",
                            "serve.engine.max_batch=2", "serve.engine.max_waiting=1")
    url = deploy(long_cfg)
    yield url, {"Authorization": "Bearer s3cret-key"}
    undeploy(long_cfg)
    del os.environ[KEY_ENV]


def test_models_and_health(openai_client, chat_url):
    assert [m.id for m in openai_client.models.list().data] == ["tiny-chat"]
    health = httpx.get(chat_url + "/healthz").json()
    assert health == {"status": "ok", "model": "tiny-chat", "context": 64, "max_tokens_cap": 63}
    stats = httpx.get(chat_url + "/stats").json()
    assert stats["slots"] == 8 and stats["batching"] and stats["context"] == 64


def test_greedy_chat_equals_generate_streaming_and_not(openai_client, local):
    messages = ask(QUESTIONS[0])
    text, finish, prompt_tokens, completion_tokens = expected_chat(local, messages, 20)
    reply = openai_client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=20, temperature=0)
    assert reply.choices[0].message.content == text and reply.choices[0].finish_reason == finish
    assert reply.id.startswith("chatcmpl-") and reply.model == "tiny-chat" and abs(reply.created - time.time()) < 60
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, completion_tokens)

    chunks = list(openai_client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=20,
                                                        temperature=0, stream=True,
                                                        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(content) == text and len(content) >= 2  # streamed in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == finish
    assert chunks[-1].usage.completion_tokens == completion_tokens and not chunks[-1].choices


def test_concurrent_requests_batched_together_return_the_same_text_as_alone(openai_client, chat_url, local):
    def one(question):
        r = openai_client.chat.completions.create(model="tiny-chat", messages=ask(question), max_tokens=24,
                                                  temperature=0)
        return r.choices[0].message.content

    alone = [expected_chat(local, ask(q), 24)[0] for q in QUESTIONS]
    before = httpx.get(chat_url + "/stats").json()["max_active"]
    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(one, QUESTIONS))
    assert together == alone
    assert httpx.get(chat_url + "/stats").json()["max_active"] >= max(before, 2)  # they did share a batch


def test_completions_and_stop_strings(openai_client, local):
    model, tok = local
    prompt = "The capital of France is"
    out = generate(model, [tok.encode(prompt, bos=True)], max_new_tokens=12, temperature=0,
                   stop_ids=[tok.eos_id, tok.end_id], pad_id=0)
    text = tok.decode([t for t in out.tokens[0] if t not in (tok.eos_id, tok.end_id)])
    reply = openai_client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=12, temperature=0)
    assert reply.choices[0].text == text and reply.object == "text_completion"

    stop = text.strip().split()[1]  # a word the greedy reply contains: the reply ends before it
    cut = openai_client.completions.create(model="tiny-chat", prompt=prompt, max_tokens=12, temperature=0, stop=stop)
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = openai_client.chat.completions.create(model="tiny-chat", messages=ask(QUESTIONS[1]), max_tokens=20,
                                                     temperature=0, stream=True, stop=["e"])
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert "e" not in text


BAD = [
    # (body, status, param, code, words in the message)
    (b"{not json", 400, None, "invalid_json", "not valid JSON"),
    (b"[1, 2]", 400, None, "invalid_json", "JSON object"),
    ({}, 400, "messages", None, "'messages' is required"),
    ({"messages": "hi"}, 400, "messages", None, "non-empty list"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role", None, "must be one of"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", None, "must be a string"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}, 400, "max_tokens", None, "between 1 and 63"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, 400, "max_tokens", None, "integer"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -0.5}, 400, "temperature", None, "[0, 2]"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, 400, "top_p", None, "(0, 1]"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 3}, 400, "n", None, "'n' must be 1"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400, "stream", None, "true or false"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, 400, "stop", None, "list of at most 4"),
    ({"messages": [{"role": "user", "content": "x"}], "model": "gpt-4"}, 404, "model", "model_not_found", "gpt-4"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, 400, "messages", "context_length_exceeded",
     "context is 64 tokens"),
]


@pytest.mark.parametrize("body, status, param, code, words", BAD, ids=[w for *_, w in BAD])
def test_bad_input_gets_an_openai_error_object_and_the_replica_stays_up(chat_url, body, status, param, code, words):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(chat_url + "/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"},
                   timeout=30)
    error = r.json()["error"]
    assert r.status_code == status and error["param"] == param and error["code"] == code, error
    assert words in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(chat_url + "/healthz").json()["status"] == "ok"


def test_unknown_routes_and_completions_errors(chat_url):
    r = httpx.get(chat_url + "/v1/nothing")
    assert r.status_code == 404 and "routes" in r.json()["error"]["message"]
    r = httpx.post(chat_url + "/v1/completions", json={"prompt": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(chat_url + "/v1/completions", json={"prompt": "word " * 80})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_the_oldest_messages_are_left_out_when_the_conversation_no_longer_fits(chat_url):
    history = []
    for i in range(6):
        history += [{"role": "user", "content": f"Question {i} about the weather in Paris today?"},
                    {"role": "assistant", "content": f"Answer {i}: it is sunny and warm."}]
    messages = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": "And tomorrow?"}]
    r = httpx.post(chat_url + "/v1/chat/completions", json={"messages": messages, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    dropped = int(r.headers["X-Context-Dropped-Messages"])
    assert 0 < dropped < len(history) and r.json()["usage"]["prompt_tokens"] + 8 <= 64


def test_an_api_key_is_required_when_set(keyed):
    url, auth = keyed
    r = httpx.post(url + "/v1/chat/completions", json={"messages": ask("Hi")})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        r = httpx.get(url + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(url + "/v1/models", headers=auth).json()["data"][0]["id"] == "tiny-chat"
    assert httpx.get(url + "/healthz").status_code == 200  # health checks need no key


def test_a_request_arriving_mid_decode_is_answered_before_the_running_one_ends(keyed):
    url, auth = keyed
    body = {"messages": ask(QUESTIONS[2]), "max_tokens": 900, "temperature": 0, "stream": True}
    events = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=auth, timeout=60) as long:
        lines = long.iter_lines()
        while not any('"content"' in line and '""' not in line for line in events):
            events.append(next(lines))  # the long reply is decoding
        short = httpx.post(url + "/v1/chat/completions", headers=auth, timeout=60,
                           json={"messages": ask(QUESTIONS[3]), "max_tokens": 4, "temperature": 0})
        assert short.status_code == 200
        rest = [line for line in lines if line]  # the long one is still going: its end comes after the short reply
    finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in rest
              if line.startswith("data: {") and '"choices": [{' in line]
    assert finish[-1] == "length" and rest[-1] == "data: [DONE]"


def test_a_client_that_disconnects_mid_stream_frees_its_slot(keyed):
    url, auth = keyed
    before = httpx.get(url + "/stats").json()
    body = {"messages": ask(QUESTIONS[4]), "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=auth, timeout=60) as r:
        lines = r.iter_lines()
        next(lines)
        assert httpx.get(url + "/stats").json()["active"] == 1
    # The connection is closed: the replica notices, cancels the request and the batch shrinks.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = httpx.get(url + "/stats").json()
        if health["active"] == 0:
            break
        time.sleep(0.1)
    assert health["active"] == 0 and health["cancelled"] == before["cancelled"] + 1
    assert health["tokens"] - before["tokens"] < 900


def test_a_full_queue_answers_429_with_retry_after(keyed):
    url, auth = keyed  # 2 slots, 1 waiting place
    body = {"messages": ask(QUESTIONS[5]), "max_tokens": 900, "temperature": 0, "stream": True}
    with httpx.Client(headers=auth, timeout=60) as client:
        streams = [client.stream("POST", url + "/v1/chat/completions", json=body) for _ in range(3)]
        lines = []
        for i, stream in enumerate(streams):
            response = stream.__enter__()
            if i < 2:
                lines.append(response.iter_lines())
                next(lines[-1])  # decoding: both slots are taken
        try:
            over = client.post(url + "/v1/chat/completions", json={**body, "stream": False})
            assert over.status_code == 429 and over.headers["Retry-After"] == "1"
            assert over.json()["error"]["code"] == "overloaded"
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
