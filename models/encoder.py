"""Bidirectional transformer encoder, shaped like BERT, with its pre-training heads and a classifier.

Features: token + learned absolute position + segment (token type) embeddings summed, then LayerNorm and dropout;
post-norm blocks as in BERT (x = LayerNorm(x + sublayer(x))) with biased linears, bidirectional multi-head
attention through `F.scaled_dot_product_attention` with a key padding mask, and a GELU MLP; a masked-LM head
(dense + GELU + LayerNorm, then a decoder tied to the word embedding plus its own bias); a tanh pooler over the
first ([CLS]) token shared by the next-sentence head (2 classes, index 1 = "B really follows A") and by
`SequenceClassifier`. Normal(0, init_std) init, zero biases, unit LayerNorm gains.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class EncoderConfig:
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int  # MLP hidden width
    max_seq_len: int  # learned position embeddings: the longest input
    type_vocab_size: int = 2  # segments (sentence A / sentence B)
    norm_eps: float = 1e-12
    dropout: float = 0.1
    init_std: float = 0.02
    pad_id: int = 0  # its embedding row stays zero; with no attention_mask, tokens == pad_id are masked out

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model, padding_idx=cfg.pad_id)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.size(1)
        if T > self.position_embeddings.num_embeddings:
            raise ValueError(f"sequence length {T} > max_seq_len={self.position_embeddings.num_embeddings}")
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(
            token_type_ids
        )  # (B, T, D)
        return self.dropout(self.norm(x))


class Attention(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.d_model // cfg.n_head
        self.dropout = cfg.dropout
        self.q_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.k_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.v_proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.o_proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x, key_mask):
        B, T, D = x.shape
        q, k, v = (p(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2) for p in
                   (self.q_proj, self.k_proj, self.v_proj))  # (B, n_head, T, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, n_head, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.attention = Attention(cfg)
        self.attention_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, key_mask):
        x = self.attention_norm(x + self.dropout(self.attention(x, key_mask)))
        return self.mlp_norm(x + self.dropout(self.mlp(x)))


class MLMHead(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden, word_embedding):
        h = self.norm(F.gelu(self.dense(hidden)))  # (B, T, D)
        return F.linear(h, word_embedding, self.bias)  # (B, T, V), decoder tied to the word embedding


class Pooler(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, D) from the first ([CLS]) token


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.mlm_head = MLMHead(cfg)
        self.pooler = Pooler(cfg)
        self.nsp_head = nn.Linear(cfg.d_model, 2)
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.cfg.init_std)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.mlm_head.bias)
        with torch.no_grad():
            self.embeddings.word_embeddings.weight[self.cfg.pad_id].zero_()

    def forward(self, input_ids, *, token_type_ids=None, attention_mask=None):
        """(B, T) token ids -> (B, T, D) hidden states.

        token_type_ids: (B, T) segment ids, zeros by default. attention_mask: (B, T) 1/0; by default
        input_ids != pad_id. Pad positions are never attended to, so they do not change other positions.
        """
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = input_ids != self.cfg.pad_id
        key_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T), broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, D)
        for block in self.layers:
            x = block(x, key_mask)
        return x

    def mlm_logits(self, hidden):
        """(B, T, D) -> (B, T, V) masked-token logits; any (..., D), e.g. only the masked positions (N, D)."""
        return self.mlm_head(hidden, self.embeddings.word_embeddings.weight)

    def pooled(self, hidden):
        """(B, T, D) -> (B, D) tanh-pooled first token."""
        return self.pooler(hidden)

    def nsp_logits(self, hidden):
        """(B, T, D) -> (B, 2) next-sentence logits; class 1 means "B really follows A"."""
        return self.nsp_head(self.pooled(hidden))

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters; non_embedding leaves out the word, position and segment embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(p.numel() for p in self.embeddings.parameters() if p.dim() == 2)
        return n

    def flops_per_token(self, seq_len: int, *, decoded_fraction: float = 1.0) -> float:
        """Training FLOPs (forward + backward) per token at length seq_len (PaLM appendix B, nanoGPT).

        6 per parameter for the weight matmuls, each counted where it runs: the blocks (and the embedding norm) at
        every position; the MLM head — its transform and the decoder tied to the word embedding (vocab x d_model,
        a matmul although its weight is the embedding) — only at the `decoded_fraction` of positions that are
        decoded (MLM's mask_prob; 0 when only NSP trains); the pooler and NSP head once per sequence. Plus
        12 * n_layer * d_model * seq_len for attention scores and weighted values (bidirectional, so every query
        sees every key).
        """
        cfg = self.cfg
        mlm_head_params = sum(p.numel() for p in self.mlm_head.parameters())
        per_sequence = sum(p.numel() for m in (self.pooler, self.nsp_head) for p in m.parameters())
        every_position = self.num_params(non_embedding=True) - mlm_head_params - per_sequence
        decoded = mlm_head_params + cfg.vocab_size * cfg.d_model
        n = every_position + decoded_fraction * decoded + per_sequence / seq_len
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.d_model * seq_len


class SequenceClassifier(nn.Module):
    """Encoder -> tanh-pooled first token -> dropout -> linear to num_labels logits."""

    def __init__(self, encoder: Encoder, num_labels: int):
        super().__init__()
        self.num_labels = num_labels
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.cfg.dropout)
        self.classifier = nn.Linear(encoder.cfg.d_model, num_labels)
        nn.init.normal_(self.classifier.weight, mean=0.0, std=encoder.cfg.init_std)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, input_ids, *, token_type_ids=None, attention_mask=None):
        """(B, T) token ids -> (B, num_labels) logits."""
        hidden = self.encoder(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return self.classifier(self.dropout(self.encoder.pooled(hidden)))  # (B, num_labels)
