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
    assert health == {"status": "ok", "model": "tiny-chat", "context": 64, "max_tokens_cap": 63,
                      "generation": {"temperature": 0.0, "top_p": 0.95, "max_tokens": 24, "system_prompt": None}}
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


def test_the_defaults_are_the_evaluated_settings(openai_client, local):
    """A request that leaves temperature and the system prompt out gets what the evaluation measured: the greedy
    reply to the conversation as it is, with no system prompt added (it was sampled at temperature 0.7)."""
    question = [{"role": "user", "content": QUESTIONS[1]}]
    text, finish, prompt_tokens, _ = expected_chat(local, question, 20)
    for _ in range(2):
        reply = openai_client.chat.completions.create(model="tiny-chat", messages=question, max_tokens=20)
        assert reply.choices[0].message.content == text and reply.choices[0].finish_reason == finish
        assert reply.usage.prompt_tokens == prompt_tokens


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
    ({"messages": [{"role": "user", "content": "x"}], "stop": "x" * 257}, 400, "stop", None, "at most 256 characters"),
    ({"messages": [{"role": "user", "content": "x"}], "seed": 2**70}, 400, "seed", None, "'seed' must be between"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 10**400}, 400, "temperature", None, "[0, 2]"),
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


def test_the_developer_role_is_the_system_prompt(openai_client, local):
    messages = [{"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": QUESTIONS[0]}]
    text, _, prompt_tokens, _ = expected_chat(local, ask(QUESTIONS[0]), 8)
    reply = openai_client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == text and reply.usage.prompt_tokens == prompt_tokens


def test_usage_counts_the_tokens_of_the_text_a_stop_string_cut(openai_client, local):
    model, tok = local
    messages = ask(QUESTIONS[0])
    prompt = tok.encode_chat(messages, add_generation_prompt=True).ids
    tokens = generate(model, [prompt], max_new_tokens=24, temperature=0, stop_ids=list(tok.stop_ids),
                      pad_id=0).tokens[0]
    whole = tok.decode([t for t in tokens if t not in tok.stop_ids])
    stop = whole.split()[2]  # a word in the middle of the greedy reply: the tokens decoded after it are not the reply
    text = whole[:whole.index(stop)]
    used = next(n for n in range(len(tokens) + 1) if tok.decode(tokens[:n]).startswith(text))
    assert used < len(tokens)
    for _ in range(2):  # the same greedy request, the same usage (it counted 23, 20, 24 tokens)
        reply = openai_client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=24,
                                                      temperature=0, stop=stop)
        assert reply.choices[0].message.content == text and reply.choices[0].finish_reason == "stop"
        assert reply.usage.completion_tokens == used
        chunks = list(openai_client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=24,
                                                            temperature=0, stop=stop, stream=True,
                                                            stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage.completion_tokens == used


def test_a_megabyte_conversation_does_not_hold_up_other_clients(chat_url, served):
    limits = served[0].serve.limits
    messages = [{"role": "system", "content": "Be brief."}]
    messages += [{"role": ("user", "assistant")[i % 2], "content": ("weather in Paris " * 60)[:1000]}
                 for i in range(998)]
    messages.append({"role": "user", "content": "And tomorrow?"})
    body = json.dumps({"messages": messages, "max_tokens": 4, "temperature": 0}).encode()
    assert 1_000_000 < len(body) <= limits.max_request_bytes and len(messages) <= limits.max_messages
    headers = {"Content-Type": "application/json"}

    def post():
        start = time.perf_counter()
        r = httpx.post(chat_url + "/v1/chat/completions", content=body, headers=headers, timeout=30)
        return r, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post)
        health = []
        while not answer.done():
            start = time.perf_counter()
            assert httpx.get(chat_url + "/healthz", timeout=30).status_code == 200
            health.append(time.perf_counter() - start)
        r, seconds = answer.result()
    print(f"1,000 messages, {len(body) / 1e6:.2f} MB: answered in {seconds:.3f} s; concurrent /healthz: "
          f"{len(health)} calls, slowest {max(health) * 1000:.0f} ms")
    assert r.status_code == 200 and int(r.headers["X-Context-Dropped-Messages"]) == 998, r.text[:300]
    # Measured ~0.3 s and ~20 ms on an idle 2-core machine (the target: < 1 s, < 100 ms); the bounds are generous
    # because the test machine is shared. Before the one-pass rule: ~100 s and ~100 s.
    assert seconds < 5 and max(health) < 1

    too_many = {"messages": [{"role": "user", "content": "hi"}] * (limits.max_messages + 1)}
    r = httpx.post(chat_url + "/v1/chat/completions", json=too_many, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_messages"
    assert f"at most {limits.max_messages}" in r.json()["error"]["message"]
    r = httpx.post(chat_url + "/v1/completions", json={"prompt": "x" * (limits.max_request_bytes + 1)}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large"


def test_internal_errors_name_a_request_id_and_keep_their_text_in_the_log(served, chat_checkpoint):
    """A model deployment that fails in every way a replica can: before it accepts a request, with an error event
    mid-reply, and in /stats. The client sees a generic message with the request id; the log has the cause."""
    import ray
    from ray import serve

    from pipelines.serve.app import ChatServer, settings_of

    secret = "at /home/someone/lmlife/models/secret.py pid=4242 node 10.0.0.7"

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class BrokenModel:
        async def generate(self, prompt, params):
            if params["seed"] == 1:
                raise RuntimeError(f"failed {secret}")
            yield []
            yield [(None, None, f"decoding failed: RuntimeError: {secret}")]

        def stats(self):
            raise RuntimeError(f"stats failed {secret}")

    cfg, _ = served
    settings = settings_of(cfg)
    serve.run(ChatServer.options(ray_actor_options={"num_cpus": 0}).bind(BrokenModel.bind(), chat_checkpoint,
                                                                         settings),
              name="broken", route_prefix="/broken")
    url = f"http://127.0.0.1:{cfg.serve.port}/broken"
    try:
        ids = []
        for seed in (1, 2):
            r = httpx.post(url + "/v1/chat/completions", json={"messages": ask("Hi"), "seed": seed}, timeout=30)
            error = r.json()["error"]
            assert r.status_code == 500 and error["type"] == "server_error", r.text
            ids.append(r.headers["X-Request-Id"])  # Serve's id of the request
            assert f"request id {ids[-1]}" in error["message"]
            assert not any(word in r.text for word in ("secret", "pid", "Traceback", "RuntimeError", "/home"))
        r = httpx.post(url + "/v1/chat/completions", json={"messages": ask("Hi"), "seed": 2, "stream": True},
                       timeout=30)
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        assert r.status_code == 200 and f"request id {r.headers['X-Request-Id']}" in events[-1]["error"]["message"]
        assert "secret" not in r.text and r.text.rstrip().endswith("data: [DONE]")
        r = httpx.get(url + "/stats", timeout=30)
        assert r.status_code == 500 and "secret" not in r.text and r.headers["X-Request-Id"] in r.text
        ids.append(r.headers["X-Request-Id"])

        logs = os.path.join(ray._private.worker.global_worker.node.get_logs_dir_path(), "serve")
        deadline, text = time.monotonic() + 10, ""
        while time.monotonic() < deadline and not all(f"{i}" in text and secret in text for i in ids):
            time.sleep(0.2)
            text = "".join(open(os.path.join(logs, f), errors="replace").read() for f in os.listdir(logs)
                           if f.startswith("replica_broken_ChatServer"))
        for request_id in ids:  # each id beside its cause
            assert any(request_id in line for line in text.splitlines()), (request_id, text[-3000:])
        assert secret in text
    finally:
        serve.delete("broken", _blocking=True)
