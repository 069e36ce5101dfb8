"""Serving fixtures: a trained tiny checkpoint (the session's pre-trained decoder, greedy choices stable), a copy of
it with a long context (decodes long enough to disconnect mid-stream), and a running app per test module."""

from __future__ import annotations

import socket

import pytest



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def chat_checkpoint(pretrained_decoder) -> str:
    return pretrained_decoder.final_dir


@pytest.fixture(scope="session")
def long_checkpoint(chat_checkpoint, tmp_path_factory) -> str:
    """The same weights with max_seq_len 1024 (rotary positions: only a bound): replies long enough to watch."""
    from models import load_checkpoint, save_checkpoint
    from models.checkpoint import read_tokenizer_model

    model, meta = load_checkpoint(chat_checkpoint)
    model.cfg.max_seq_len = 1024
    path = tmp_path_factory.mktemp("serve-ckpt") / "long"
    save_checkpoint(str(path), model, tokenizer_model=read_tokenizer_model(chat_checkpoint), meta=meta)
    return str(path)


def serve_config(compose_config, checkpoint: str, *extra: str):
    return compose_config("serve", [f"checkpoint={checkpoint}", f"serve.port={free_port()}", "serve.num_cpus=0.5",
                                    "serve.model_name=tiny-chat", "serve.engine.max_batch=8",
                                    "serve.generation.max_tokens=24", "serve.max_ongoing_requests=32", *extra])


@pytest.fixture(scope="session")
def serve_settings(compose_config):
    """`serve_settings(checkpoint, *overrides)`: a composed conf/serve.yaml for the tests (a free port each)."""
    return lambda checkpoint, *extra: serve_config(compose_config, checkpoint, *extra)


@pytest.fixture(scope="module")
def served(ray_cluster, compose_config, chat_checkpoint):
    """(config, base URL) of the chat app on the session cluster; deleted, and Serve shut down, after the module."""
    from ray import serve

    from pipelines.serve.app import deploy, undeploy

    cfg = serve_config(compose_config, chat_checkpoint)
    url = deploy(cfg)
    yield cfg, url
    undeploy(cfg)
    serve.shutdown()


@pytest.fixture(scope="module")
def chat_url(served) -> str:
    return served[1]


@pytest.fixture(scope="module")
def openai_client(chat_url):
    import openai

    return openai.OpenAI(base_url=chat_url + "/v1", api_key="none", max_retries=0, timeout=60)
