"""Tiny model factories shared by the tests in tests/models."""

import torch

from models.decoder import Decoder, DecoderConfig
from models.encoder import Encoder, EncoderConfig

VOCAB = 97


def tiny_decoder_config(**overrides) -> DecoderConfig:
    values = dict(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=4, n_kv_head=2, d_ff=64, max_seq_len=64)
    return DecoderConfig(**{**values, **overrides})


def tiny_encoder_config(**overrides) -> EncoderConfig:
    values = dict(vocab_size=VOCAB, d_model=32, n_layer=2, n_head=4, d_ff=64, max_seq_len=32, dropout=0.0)
    return EncoderConfig(**{**values, **overrides})


def randomize_norms(model: torch.nn.Module):
    """Norm gains (and biases) start at 1 (0); random values make round-trip tests see them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return model
