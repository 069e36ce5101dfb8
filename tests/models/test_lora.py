import pytest
import torch

from models.checkpoint import load_checkpoint, load_weights_into, save_checkpoint
from models.decoder import Decoder
from models.lora import LoRALinear, apply_lora, lora_state_dict, mark_only_lora_trainable, merge_lora
from tiny_models import VOCAB, tiny_decoder_config


def _with_trained_adapters(model):
    apply_lora(model, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj", "down_proj"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # as if trained: B starts at zero
    return model


def test_apply_replaces_only_targets(decoder):
    apply_lora(decoder, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
    attn = decoder.model.layers[0].self_attn
    assert isinstance(attn.q_proj, LoRALinear) and isinstance(attn.v_proj, LoRALinear)
    assert isinstance(attn.k_proj, torch.nn.Linear) and not isinstance(attn.k_proj, LoRALinear)
    assert len(lora_state_dict(decoder)) == 2 * 2 * 2  # layers x targets x (A, B)


def test_fresh_adapter_changes_nothing(decoder):
    ids = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        before = decoder(ids)
        apply_lora(decoder, rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
        torch.testing.assert_close(decoder(ids), before, rtol=0, atol=0)


def test_only_adapters_get_gradients(decoder):
    mark_only_lora_trainable(apply_lora(decoder, rank=4, alpha=8, dropout=0.1, targets=["q_proj", "v_proj"]))
    decoder.train()
    loss = decoder(torch.randint(0, VOCAB, (2, 8))).logsumexp(-1).mean()
    loss.backward()
    for name, p in decoder.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # B starts at zero, so A's first gradient is zero and B's is not
    assert decoder.model.layers[0].self_attn.q_proj.lora_B.grad.abs().sum() > 0


def test_merge_equivalence_and_names(decoder, tmp_path):
    names = set(decoder.state_dict())
    _with_trained_adapters(decoder)
    ids = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        unmerged = decoder(ids)
        merge_lora(decoder)
        torch.testing.assert_close(decoder(ids), unmerged, rtol=0, atol=1e-5)
    assert set(decoder.state_dict()) == names
    assert not any(isinstance(m, LoRALinear) for m in decoder.modules())
    save_checkpoint(str(tmp_path / "ckpt"), decoder)
    loaded, _ = load_checkpoint(str(tmp_path / "ckpt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids), unmerged, rtol=0, atol=1e-5)


def test_unknown_target_is_an_error(decoder):
    with pytest.raises(ValueError, match="q_porj.*linear names"):
        apply_lora(decoder, rank=4, alpha=8, dropout=0.0, targets=["q_porj"])


def test_unmerged_adapters_resume_through_load_weights_into(decoder, tmp_path):
    _with_trained_adapters(decoder)
    save_checkpoint(str(tmp_path), decoder)
    resumed = apply_lora(Decoder(tiny_decoder_config()), rank=4, alpha=8, dropout=0.0,
                         targets=["q_proj", "v_proj", "down_proj"])
    load_weights_into(resumed, str(tmp_path))
    ids = torch.randint(0, VOCAB, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(resumed.eval()(ids), decoder(ids), rtol=0, atol=0)
