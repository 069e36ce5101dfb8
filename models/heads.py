"""Scalar heads on a decoder's final hidden states, for alignment.

Features: `ScalarHead`, a biased linear d_model -> 1 read either at the last non-pad token of each sequence (a
sequence-level score; works with left or right padding) or at every position; `RewardModel`, a decoder plus a
scalar head giving one score per sequence (trained on preference pairs); `ValueModel`, a decoder plus a scalar head
giving one value per token (the PPO critic).
"""

import torch
import torch.nn as nn

from models.decoder import Decoder


def last_token_index(attention_mask):
    """(B, T) 1/0 mask -> (B,) index of the last 1 in each row (0 for a row of zeros)."""
    T = attention_mask.size(1)
    positions = torch.arange(T, device=attention_mask.device)  # (T,)
    return (attention_mask.long() * positions).argmax(dim=-1)


class ScalarHead(nn.Module):
    def __init__(self, d_model: int, init_std: float = 0.02):
        super().__init__()
        self.proj = nn.Linear(d_model, 1)
        nn.init.normal_(self.proj.weight, mean=0.0, std=init_std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden, attention_mask=None):
        """(B, T, D) hidden, (B, T) 1/0 mask -> (B,) scores read at each row's last non-pad token."""
        B, T, _ = hidden.shape
        if attention_mask is None:
            idx = torch.full((B,), T - 1, device=hidden.device)
        else:
            idx = last_token_index(attention_mask)  # (B,)
        last = hidden[torch.arange(B, device=hidden.device), idx]  # (B, D)
        return self.proj(last).squeeze(-1)

    def per_token(self, hidden):
        """(B, T, D) -> (B, T) one scalar per position."""
        return self.proj(hidden).squeeze(-1)


class RewardModel(nn.Module):
    """Decoder -> score of each whole sequence (B,), read at its last non-pad token."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.head = ScalarHead(decoder.cfg.d_model, decoder.cfg.init_std)

    def forward(self, input_ids, *, attention_mask=None):
        hidden = self.decoder.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, D)
        return self.head(hidden, attention_mask)  # (B,)


class ValueModel(nn.Module):
    """Decoder -> value estimate at every position (B, T)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.head = ScalarHead(decoder.cfg.d_model, decoder.cfg.init_std)

    def forward(self, input_ids, *, attention_mask=None):
        hidden = self.decoder.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, D)
        return self.head.per_token(hidden)  # (B, T)
