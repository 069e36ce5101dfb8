"""One stop rule for every reply: evaluation, serving (chat and plain completions), RLHF rollouts and the reward's
"unfinished" term all end generated text at <|end|> or eos (`Tokenizer.stop_ids` / `Tokenizer.finished`).

The models here are built to say one token: a decoder whose every position has the same hidden state (all input
embeddings equal, every block's output projections zero) and whose output layer points that state at one token id,
so greedy decoding and sampling at T=1 both emit it with probability ~1. A model that ends its replies with eos is
what a pre-trained checkpoint is (it ends documents, never chat turns); before the one rule, the chat route and the
rollouts ran it on to their token caps while evaluation stopped it at once.
"""

from __future__ import annotations

import socket

import httpx
import pytest
import torch

from models import save_checkpoint
from models.decoder import Decoder, DecoderConfig
from models.heads import ScalarModel
from models.tokenizer import Tokenizer, train_sentencepiece

SENTENCES = [f"Patient {i} has a fever of {i % 5 + 37} degrees and takes water." for i in range(300)]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(train_sentencepiece(SENTENCES, model_type="bpe", vocab_size=300))


def one_token_decoder(tok: Tokenizer, token: int) -> Decoder:
    torch.manual_seed(0)
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=32, n_layer=1, n_head=2, n_kv_head=1, d_ff=64,
                                  max_seq_len=128, tie_embeddings=False))
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(32).expand_as(model.model.embed_tokens.weight))
        for block in model.model.layers:
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        hidden = model.hidden_states(torch.tensor([[5, 6]]))[0, 0]  # the same at every position
        model.lm_head.weight.zero_()
        model.lm_head.weight[token] = 50 * hidden / hidden.norm()
    return model.eval()


def test_the_rule(tok):
    assert tok.stop_ids == (tok.end_id, tok.eos_id)
    assert tok.finished([7, tok.end_id]) and tok.finished([7, tok.eos_id])
    assert not tok.finished([7, 8]) and not tok.finished([])


def test_evaluation_and_rollouts_stop_at_eos(tok, tmp_path):
    from pipelines.align.rollout import Rollout
    from pipelines.evaluate.qa import chat_replies

    model = one_token_decoder(tok, tok.eos_id)
    assert chat_replies(model, tok, ["Is water wet?"], max_new_tokens=8, batch_size=4) == [("", False)]

    save_checkpoint(str(tmp_path / "eos"), model, tokenizer_model=tok.model_proto, meta={})
    rollout = Rollout(str(tmp_path / "eos"))
    prompt = tok.encode_chat([{"role": "user", "content": "Is water wet?"}], add_generation_prompt=True).ids
    out = rollout.generate([prompt, prompt], max_new_tokens=8, temperature=1.0, top_p=1.0, seed=0)
    assert out["tokens"] == [[tok.eos_id], [tok.eos_id]]
    assert out["finish_reasons"] == ["stop", "stop"]


def test_reward_counts_a_reply_ended_by_eos_as_finished(tok, tmp_path):
    from pipelines.align.reward import RewardScorer

    torch.manual_seed(0)
    scalar = ScalarModel(Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=32, n_layer=1, n_head=2,
                                               n_kv_head=1, d_ff=64, max_seq_len=128)))
    save_checkpoint(str(tmp_path / "rm"), scalar, tokenizer_model=tok.model_proto, meta={})
    scorer = RewardScorer(str(tmp_path / "rm"), unfinished_penalty=5.0)
    prompt = tok.encode_chat([{"role": "user", "content": "Is water wet?"}], add_generation_prompt=True).ids
    words = tok.encode("Water takes a fever.")
    raw = scalar.eval().score([prompt + words + [tok.eos_id], prompt + words + [tok.end_id], prompt + words],
                              pad_id=tok.pad_id)
    scores = scorer.score([prompt] * 3, [words + [tok.eos_id], words + [tok.end_id], words])
    assert scores[0] == pytest.approx(raw[0]) and scores[1] == pytest.approx(raw[1])  # finished: no penalty
    assert scores[2] == pytest.approx(raw[2] - 5.0)  # cut off by the cap
    assert scorer.score([prompt], [[tok.eos_id]]) == [scorer.empty_score]  # nothing said before the stop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serving_stops_where_evaluation_stops(ray_cluster, compose_config, tok, tmp_path):
    """A model that ends every reply with eos: the chat route says "stop" at once (it ran to max_tokens before)."""
    from ray import serve

    from pipelines.serve.app import deploy, undeploy

    save_checkpoint(str(tmp_path / "eos"), one_token_decoder(tok, tok.eos_id), tokenizer_model=tok.model_proto,
                    meta={})
    cfg = compose_config("serve", [f"checkpoint={tmp_path / 'eos'}", f"serve.port={free_port()}",
                                   "serve.num_cpus=0.25", "serve.ingress.num_cpus=0.25", "serve.engine.max_batch=4"])
    url = deploy(cfg)
    try:
        ask = {"messages": [{"role": "user", "content": "Is water wet?"}], "max_tokens": 16, "temperature": 0}
        chat = httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=60).json()
        assert chat["choices"][0]["finish_reason"] == "stop", chat
        assert chat["usage"]["completion_tokens"] <= 1
        plain = httpx.post(f"{url}/v1/completions", json={"prompt": "Water", "max_tokens": 16, "temperature": 0},
                           timeout=60).json()
        assert plain["choices"][0]["finish_reason"] == "stop", plain
    finally:
        undeploy(cfg)
        serve.shutdown()
