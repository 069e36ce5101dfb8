from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models import Decoder, Encoder, build_model

CONF = Path(__file__).parents[2] / "conf" / "model"
PRESETS = sorted(p.stem for p in CONF.glob("*.yaml"))


def compose(name: str, vocab_size: int = 8000, seq_len: int = 128):
    """The preset as Hydra would give it, with the tokenizer and data groups it interpolates stubbed."""
    root = OmegaConf.create({"tokenizer": {"vocab_size": vocab_size}, "data": {"seq_len": seq_len}})
    root.model = OmegaConf.load(CONF / f"{name}.yaml")
    return OmegaConf.to_container(root.model, resolve=True)


def test_all_presets_are_present():
    assert set(PRESETS) >= {"decoder_tiny", "decoder_small", "decoder_gpt2", "encoder_tiny", "encoder_base"}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds(name):
    text = (CONF / f"{name}.yaml").read_text()
    assert "vocab_size: ${tokenizer.vocab_size}\n" in text and "max_seq_len: ${data.seq_len}\n" in text
    lines = text.splitlines()
    assert lines[0].startswith("#")
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"{name}: no comment above {line!r}"
    with torch.device("meta"):  # shapes only: no memory, no init time
        model = build_model(compose(name))
    assert isinstance(model, Decoder if name.startswith("decoder") else Encoder)
    assert model.cfg.vocab_size == 8000 and model.cfg.max_seq_len == 128


def test_preset_sizes():
    with torch.device("meta"):
        small = build_model(compose("decoder_small"))
        gpt2 = build_model(compose("decoder_gpt2", vocab_size=50257, seq_len=1024))
        bert = build_model(compose("encoder_base", vocab_size=30522, seq_len=512))
    assert 20e6 <= small.num_params() <= 30e6
    assert 120e6 <= gpt2.num_params() <= 128e6  # GPT-2 small: 124M
    assert 108e6 <= bert.num_params() <= 112e6  # BERT-base: 110M
