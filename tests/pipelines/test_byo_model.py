"""Bring your own base model: a Hugging Face Llama directory (written by `transformers`) with its own sentencepiece
tokenizer, trained here with Llama-2's ids (unk 0, bos 1, eos 2, no pad, no chat markers), not this project's.
`init_from=<that directory>` extends the tokenizer and grows the model, then the checkpoint goes through the
stages as any other: LoRA instruction tuning on Ray Train, the QA evaluation, one chat completion from the app."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import httpx
import pytest
import sentencepiece as spm
import torch

from models import load_checkpoint
from models.tokenizer import CHAT_SYMBOLS, Tokenizer
from tests_conf import TINY_TRAIN

STEPS = 12
CHATS = 400  # of the built-in instruction chats: a user's own chats file (data=files), small to tokenize


@pytest.fixture(scope="module")
def chats(small_overrides, compose_config, tmp_path_factory) -> Path:
    from pipelines.data.build import builtin_corpus

    corpus = Path(builtin_corpus(compose_config("data", small_overrides).data))
    path = tmp_path_factory.mktemp("byo-chats") / "chats.jsonl"
    path.write_text("\n".join((corpus / "instruct" / "train.jsonl").read_text().splitlines()[:CHATS]) + "\n")
    return path


@pytest.fixture(scope="module")
def hf_dir(chats, tmp_path_factory) -> Path:
    """A random tiny LlamaForCausalLM saved by transformers, with a Llama-2-style tokenizer.model beside it,
    trained on the chats' text (so a chat is a few dozen tokens, as with a real model's tokenizer)."""
    import transformers

    texts = [m["content"] for line in chats.read_text().splitlines() for m in json.loads(line)["messages"]]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=out, model_type="bpe",
                                   vocab_size=1000, hard_vocab_limit=False, byte_fallback=True, unk_id=0, bos_id=1,
                                   eos_id=2, pad_id=-1, minloglevel=2)
    vocab = spm.SentencePieceProcessor(model_proto=out.getvalue()).get_piece_size()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)
    path = tmp_path_factory.mktemp("byo") / "my-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    (path / "tokenizer.model").write_bytes(out.getvalue())
    return path


@pytest.fixture(scope="module")
def finetuned(ray_cluster, compose_config, data_root, chats, hf_dir, tmp_path_factory):
    """LoRA instruction tuning from the HF directory for a few steps (the one Ray Train fit of this module)."""
    from pipelines.finetune import finetune

    runs = tmp_path_factory.mktemp("byo-runs")
    cfg = compose_config("finetune", ["finetune=instruct", f"init_from={hf_dir}", "run.name=byo", f"run.root={runs}",
                                      f"data.root={data_root}", "data=files", f"data.paths=[{chats}]",
                                      "data.valid_fraction=0.05", *TINY_TRAIN, f"trainer.max_steps={STEPS}",
                                      "data.seq_len=96", "finetune.lora.rank=8"])
    return finetune(cfg)


def test_the_foreign_tokenizer_is_extended_and_the_model_grown(hf_dir, finetuned):
    import transformers

    foreign = spm.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
    n = foreign.get_piece_size()
    init = Path(finetuned.final_dir).parent / "init"
    meta = json.loads((init / "meta.json").read_text())
    assert meta["added_tokens"] == {"<pad>": n, **{sym: n + 1 + i for i, sym in enumerate(CHAT_SYMBOLS)}}
    tok = Tokenizer.load(str(init / "tokenizer.model"))
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, n) and tok.stop_ids == (n + 4, 2)
    model, _ = load_checkpoint(str(init))
    assert model.cfg.vocab_size == n + 5 and model.lm_head is not None
    # The old tokens' logits are the Hugging Face model's; the new rows start at the mean of the old ones.
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.tensor([foreign.encode("Water boils at 100 degrees.", add_bos=True)])
    with torch.no_grad():
        ours, theirs = model.eval()(ids), hf(ids).logits
    torch.testing.assert_close(ours[..., :n], theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.lm_head.weight[n:], hf.lm_head.weight.mean(dim=0).expand(5, -1))

    # Fine-tuning trained on the extended tokenizer's ids: it is saved beside the weights, and its shards pad
    # with the new pad id (not eos) and need none of the encoders' MLM symbols.
    final = Path(finetuned.final_dir)
    assert (final / "tokenizer.model").read_bytes() == (init / "tokenizer.model").read_bytes()
    shards = json.loads((Path(json.loads((final / "meta.json").read_text())["shards"]) / "manifest.json").read_text())
    assert shards["tokenizer"]["special_ids"]["pad"] == n and "mask" not in shards["tokenizer"]["special_ids"]
    assert shards["splits"]["train"]["examples"] > CHATS * 0.8
    history = [m["loss"] for m in finetuned.metrics["history"]]
    assert history[-1] < history[0], history
    merged, _ = load_checkpoint(str(final))
    assert merged.cfg.vocab_size == n + 5 and (final / "adapter.safetensors").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_finetuned_model_is_evaluated_and_served(finetuned, compose_config, small_overrides):
    from ray import serve

    from pipelines.evaluate import evaluate
    from pipelines.serve.app import deploy, undeploy

    final = finetuned.final_dir
    data = [o for o in small_overrides if o.startswith("data.")]
    ecfg = compose_config("evaluate", [*data, f"checkpoint={final}", "eval.qa_limit=8", "eval.qa_max_new_tokens=8"])
    qa = evaluate(ecfg, ecfg.checkpoint, suites=["qa"])["qa"]
    assert all(0 <= qa[k] <= 1 for k in ("seen", "held_out", "format_ok"))

    cfg = compose_config("serve", [f"checkpoint={final}", f"serve.port={free_port()}", "serve.num_cpus=0.25",
                                   "serve.ingress.num_cpus=0.25", "serve.engine.max_batch=4"])
    url = deploy(cfg)
    try:
        ask = {"messages": [{"role": "user", "content": "Where is <|assistant|> the capital?"}], "max_tokens": 8,
               "temperature": 0}
        reply = httpx.post(f"{url}/v1/chat/completions", json=ask, timeout=60)
        assert reply.status_code == 200, reply.text
        choice = reply.json()["choices"][0]
        assert choice["finish_reason"] in ("stop", "length") and isinstance(choice["message"]["content"], str)
        assert 0 < reply.json()["usage"]["prompt_tokens"]
    finally:
        undeploy(cfg)
        serve.shutdown()


def test_full_finetuning_plan_tokenizer_path_and_the_refusals(compose_config, data_root, chats, hf_dir, tmp_path):
    """Without Ray: full fine-tuning plans from the same directory with the tokenizer given as tokenizer.path; a
    directory with no tokenizer, and encoder data or pre-training shards on a foreign tokenizer, are refused."""
    import shutil

    from pipelines.data import prepare_shards
    from pipelines.errors import CheckpointError, ConfigError
    from pipelines.finetune import plan

    bare = tmp_path / "weights-only"
    shutil.copytree(hf_dir, bare, ignore=shutil.ignore_patterns("tokenizer.model"))

    def cfg(name, *extra):
        return compose_config("finetune", ["finetune=instruct", f"init_from={bare}", f"run.name={name}",
                                           f"run.root={tmp_path / 'runs'}", f"data.root={data_root}", "data=files",
                                           f"data.paths=[{chats}]", "data.seq_len=96", *extra])

    with pytest.raises(CheckpointError, match="without a tokenizer.model: give tokenizer.path="):
        plan(cfg("no-tokenizer"))
    full = plan(cfg("full", f"tokenizer.path={hf_dir / 'tokenizer.model'}"))
    n = spm.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model")).get_piece_size()
    assert full.lora is None and load_checkpoint(full.init_from)[0].cfg.vocab_size == n + 5
    assert Tokenizer.load(str(Path(full.init_from) / "tokenizer.model")).pad_id == n

    # The foreign tokenizer as it is (no chat markers, no pad): a one-line refusal, not a traceback.
    data = ["data=files", f"data.paths=[{chats}]", f"data.root={data_root}", "data.record=chat"]
    with pytest.raises(ConfigError, match=r"tokenizer.path=.*lacks <pad>, <\|system\|>"):
        prepare_shards(compose_config("data", [*data, "objective=sft", f"tokenizer.path={hf_dir / 'tokenizer.model'}"]))
    # Extended, it serves decoders only: encoder shards need <mask>, <cls>, <sep>.
    extended = str(Path(full.init_from) / "tokenizer.model")
    with pytest.raises(ConfigError, match="'pairs' shards are for encoders .* lacks"):
        prepare_shards(compose_config("data", ["data=files", f"data.paths=[{chats}]", f"data.root={data_root}",
                                               "objective=mlm_nsp", f"tokenizer.path={extended}"]))
