"""Scalar heads on a decoder's final hidden states, for alignment.

Features: `ScalarHead`, a biased linear d_model -> 1 read either at the last non-pad token of each sequence (a
sequence-level score; works with left or right padding) or at every position; `ScalarModel`, a decoder plus a
scalar head: one score per sequence (the reward model, trained on rankings) or one value per token (the PPO
critic), and `score` for lists of token sequences.
"""

import torch
import torch.nn as nn

from models.decoder import Decoder
from models.tokenizer import Tokenizer


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


class ScalarModel(nn.Module):
    """A decoder with a scalar head: the reward model (one score per sequence, read at its last non-pad token) and
    the PPO critic (`per_token=True`: one value per position) are the same module."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder
        self.head = ScalarHead(decoder.cfg.d_model, decoder.cfg.init_std)

    def forward(self, input_ids, *, attention_mask=None, per_token: bool = False):
        """(B, T) ids -> (B,) scores, or (B, T) values with `per_token`."""
        hidden = self.decoder.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, D)
        return self.head.per_token(hidden) if per_token else self.head(hidden, attention_mask)

    @torch.no_grad()
    def score(self, sequences: list[list[int]], *, pad_id: int, batch_size: int = 32) -> list[float]:
        """The score of each token sequence (e.g. a chat prompt and its reply), right-padded in batches."""
        device = self.head.proj.weight.device
        scores: list[float] = []
        for i in range(0, len(sequences), batch_size):
            chunk = sequences[i:i + batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, seq in enumerate(chunk):
                ids[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), 1
            scores += self(ids.to(device), attention_mask=mask.to(device)).float().tolist()
        return scores

    def score_replies(self, prompts: list[list[int]], replies: list[list[int]], *, tok: Tokenizer,
                      empty_score: float, unfinished_penalty: float, batch_size: int = 32) -> list[float]:
        """The reward of generated replies as RLHF pays it and evaluation reports it: the score of the exact tokens
        generated (prompt, then the reply with its stop token), `empty_score` for a reply with no text before its
        stop, and `unfinished_penalty` off a reply the token cap cut (not ended by `tok`'s stop rule)."""
        scores = self.score([p + r for p, r in zip(prompts, replies)], pad_id=tok.pad_id, batch_size=batch_size)
        for i, reply in enumerate(replies):
            if not tok.decode([t for t in reply if t not in tok.stop_ids]).strip():
                scores[i] = empty_score
            elif not tok.finished(reply):
                scores[i] -= unfinished_penalty
        return scores
