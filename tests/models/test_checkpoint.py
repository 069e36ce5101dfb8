import pytest
import torch

from models.checkpoint import (
    load_checkpoint,
    load_state,
    load_weights_into,
    read_tokenizer_model,
    save_checkpoint,
    save_state,
)
from models.decoder import Decoder
from models.encoder import Encoder, SequenceClassifier
from models.heads import ScalarModel
from tiny_models import VOCAB, randomize_norms, tiny_decoder_config, tiny_encoder_config


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("tied", [False, True])
def test_decoder_round_trip(tmp_path, tied):
    model = randomize_norms(Decoder(tiny_decoder_config(tie_embeddings=tied)))
    save_checkpoint(str(tmp_path), model, tokenizer_model=b"\x00spm", meta={"stage": "pretrain", "step": 7})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "meta.json", "model.safetensors",
                                                           "tokenizer.model"]
    loaded, meta = load_checkpoint(str(tmp_path))
    assert isinstance(loaded, Decoder) and loaded.cfg == model.cfg
    assert meta == {"stage": "pretrain", "step": 7} and read_tokenizer_model(str(tmp_path)) == b"\x00spm"
    assert_same_state(model, loaded)
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    ids = torch.randint(0, VOCAB, (2, 5))
    torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)


def test_tied_model_trains_one_tensor_after_load(tmp_path):
    save_checkpoint(str(tmp_path), Decoder(tiny_decoder_config(tie_embeddings=True)))
    loaded, _ = load_checkpoint(str(tmp_path))
    loaded(torch.randint(0, VOCAB, (1, 4))).sum().backward()
    assert loaded.lm_head is None and loaded.model.embed_tokens.weight.grad is not None


def test_encoder_and_wrappers_round_trip(tmp_path):
    encoder = randomize_norms(Encoder(tiny_encoder_config()))
    for i, model in enumerate([encoder, SequenceClassifier(encoder, num_labels=3),
                               ScalarModel(Decoder(tiny_decoder_config()))]):
        save_checkpoint(str(tmp_path / str(i)), model)
        loaded, meta = load_checkpoint(str(tmp_path / str(i)))
        assert type(loaded) is type(model) and meta == {}
        assert_same_state(model, loaded)
    assert loaded.head.proj.weight.shape == (1, 32)


def test_bf16_round_trip(tmp_path):
    model = Decoder(tiny_decoder_config()).to(torch.bfloat16)
    save_checkpoint(str(tmp_path), model)
    loaded, _ = load_checkpoint(str(tmp_path))
    assert loaded.model.norm.weight.dtype == torch.bfloat16
    assert_same_state(model, loaded)


def test_load_weights_into_names_mismatching_tensors(tmp_path):
    save_checkpoint(str(tmp_path), Decoder(tiny_decoder_config()))
    target = Decoder(tiny_decoder_config())
    load_weights_into(target, str(tmp_path))
    with pytest.raises(ValueError) as err:
        load_weights_into(Decoder(tiny_decoder_config(vocab_size=50)), str(tmp_path))
    assert f"model.embed_tokens.weight: checkpoint ({VOCAB}, 32) vs model (50, 32)" in str(err.value)
    assert f"lm_head.weight: checkpoint ({VOCAB}, 32) vs model (50, 32)" in str(err.value)
    with pytest.raises(ValueError, match=r"unexpected in checkpoint: lm_head.weight"):
        load_weights_into(Decoder(tiny_decoder_config(tie_embeddings=True)), str(tmp_path))
    with pytest.raises(ValueError, match=r"missing from checkpoint: model.layers.2.input_layernorm.weight"):
        load_weights_into(Decoder(tiny_decoder_config(n_layer=3)), str(tmp_path))


def test_optimizer_and_rng_state_round_trip(tmp_path):
    model = Decoder(tiny_decoder_config())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    for _ in range(2):
        model(torch.randint(0, VOCAB, (2, 6))).mean().backward()
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
             "step": 2, "python_rng": (3, (1, 2), None)}
    save_state(str(tmp_path / "state.safetensors"), state)
    loaded = load_state(str(tmp_path / "state.safetensors"))
    assert loaded["step"] == 2 and loaded["python_rng"] == (3, (1, 2), None)
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["scheduler"] == state["scheduler"]  # plain values, e.g. lr_lambdas == [None]
    for index, entry in state["optimizer"]["state"].items():
        for key, value in entry.items():
            assert torch.equal(loaded["optimizer"]["state"][index][key], value), (index, key)
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.param_groups[0]["betas"] == (0.9, 0.95)
