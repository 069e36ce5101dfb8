"""Decoder-only transformer for causal language modelling, shaped like Llama.

Features: pre-norm blocks with RMSNorm (computed in fp32); rotary position embeddings in the Hugging Face Llama
"rotate_half" convention (not interleaved), so weights load into `LlamaForCausalLM` unchanged; grouped-query
attention (n_kv_head divides n_head) through `F.scaled_dot_product_attention`; SwiGLU MLP; no biases; optional tied
input/output embeddings (no `lm_head` module when tied, so nothing is stored twice); GPT-2 style scaled init of the
residual projections (std / sqrt(2 * n_layer)); ragged batches through a 1/0 attention mask with left padding and
per-sequence positions; a preallocated `KVCache` for incremental decoding. Parameter names follow HF Llama
(`model.layers.N.self_attn.q_proj.weight`, ...).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class DecoderConfig:
    vocab_size: int
    d_model: int
    n_layer: int
    n_head: int
    n_kv_head: int  # key/value heads; n_head must be a multiple (GQA), == n_head for plain multi-head attention
    d_ff: int  # SwiGLU hidden width
    max_seq_len: int  # longest sequence (prompt + generated) the model is used with
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not a multiple of n_head={self.n_head}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        x = x.float()  # the mean of squares in fp32 even under bf16, as HF Llama does
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(position_ids, head_dim: int, theta: float, dtype):
    """(B, T) integer positions -> cos, sin of shape (B, T, head_dim), frequencies in fp32 as HF Llama."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponent)  # (head_dim/2,)
    freqs = position_ids[..., None].float() * inv_freq  # (B, T, head_dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, head_dim)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """x (B, H, T, head_dim); cos, sin (B, T, head_dim)."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, head_dim)
    return x * cos + rotate_half(x) * sin


class KVCache:
    """Preallocated keys and values for incremental decoding, (n_layer, slots, n_kv_head, max_len, head_dim) each.

    Every slot (row) is one sequence with its own filled length, so a running batch can hold sequences of different
    lengths, and a slot whose sequence ended is freed and reused by the next one (continuous batching). A forward
    pass writes to the slots chosen with `select(slots)` — every slot, in order, by default — which then form its
    batch rows:
    - slots of equal length take any number of new tokens at once (a prefill, or `models.generate`'s left-padded
      batch, whose 1/0 attention mask marks the padding inside the cached positions);
    - slots of different lengths ("ragged") take one token each; the decoder then builds the mask and the positions
      from the slots' lengths (`ragged_mask`).
    Keys are stored after the rotary embedding, so each row keeps its own positions.
    """

    def __init__(self, cfg: DecoderConfig, batch_size: int, max_len: int, *, device=None, dtype=torch.float32):
        shape = (cfg.n_layer, batch_size, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.lengths = [0] * batch_size  # filled positions per slot
        self._rows: list[int] | None = None  # the slots of the forward pass in progress; None = every slot

    @property
    def num_slots(self) -> int:
        return len(self.lengths)

    def select(self, slots=None) -> "KVCache":
        """Make `slots` (slot ids, in batch-row order; None = every slot) the rows of the next forward passes."""
        if slots is not None:
            slots = [int(s) for s in slots]
            if not slots or min(slots) < 0 or max(slots) >= self.num_slots or len(set(slots)) != len(slots):
                raise ValueError(f"slots must be distinct ids in [0, {self.num_slots}), got {slots}")
        self._rows = slots
        return self

    @property
    def rows(self) -> list[int]:
        return list(range(self.num_slots)) if self._rows is None else self._rows

    @property
    def length(self) -> int:
        """Cached positions before the new tokens: the longest selected slot."""
        return max(self.lengths[r] for r in self.rows)

    @property
    def ragged(self) -> bool:
        return len({self.lengths[r] for r in self.rows}) > 1

    def ragged_mask(self, device):
        """(B, 1, 1, length+1) bool for one new token per row: each row sees its own cached positions and itself."""
        lengths = torch.tensor([self.lengths[r] for r in self.rows], device=device)  # (B,)
        k_idx = torch.arange(self.length + 1, device=device)  # (L+1,)
        return (k_idx[None, :] <= lengths[:, None])[:, None, None, :], lengths

    def _index(self):
        rows = self.rows
        if rows == list(range(rows[0], rows[0] + len(rows))):
            return slice(rows[0], rows[0] + len(rows))  # contiguous slots: views, no copy
        return torch.tensor(rows, device=self.k.device)

    def update(self, layer: int, k, v):
        """Write k, v (B, n_kv_head, T, head_dim) after each row's filled positions; return every row's keys and
        values up to the longest, (B, n_kv_head, length+T, head_dim) (positions past a shorter row are stale and
        masked by the caller)."""
        T, idx = k.size(2), self._index()
        ragged = self.ragged
        if ragged and T != 1:
            raise ValueError(f"slots of different lengths take one token each, got {T}")
        end = self.length + T
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len={self.max_len}")
        if ragged:
            pos = torch.tensor([self.lengths[r] for r in self.rows], device=self.k.device)
            rows = torch.arange(self.num_slots, device=self.k.device)[idx]
            self.k[layer, rows, :, pos] = k[:, :, 0]
            self.v[layer, rows, :, pos] = v[:, :, 0]
        else:
            self.k[layer, idx, :, end - T:end] = k
            self.v[layer, idx, :, end - T:end] = v
        return self.k[layer, idx, :, :end], self.v[layer, idx, :, :end]

    def advance(self, n: int):
        for r in self.rows:
            self.lengths[r] += n

    def truncate(self, slot: int, length: int):
        """Keep a slot's first `length` positions (e.g. after a right-padded batch prefill, its real tokens)."""
        if not 0 <= length <= self.lengths[slot]:
            raise ValueError(f"slot {slot} holds {self.lengths[slot]} positions, cannot keep {length}")
        self.lengths[slot] = length

    def free(self, slot: int):
        """Forget a slot's sequence so that a new one can use it (its stale keys are masked until overwritten)."""
        self.lengths[slot] = 0


class Attention(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.dropout = cfg.dropout
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, kv_cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, n_kv_head, T_total, hd)
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            is_causal=mask is None and T > 1,  # mask None means "plain causal" (or one query seeing every key)
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, n_head, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)
        return self.resid_dropout(self.o_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.resid_dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, kv_cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


def attention_bool_mask(attention_mask, past: int, T: int, device):
    """(B, past+T) 1/0 padding mask -> (B, 1, T, past+T) bool, True where a query may attend to a key.

    Causal and padding-aware. Each query may always see itself, so rows for pad queries are not empty (an empty
    row makes softmax NaN); pad outputs are garbage that no real token ever attends to.
    """
    q_idx = torch.arange(past, past + T, device=device)[:, None]  # (T, 1)
    k_idx = torch.arange(past + T, device=device)[None, :]  # (1, past+T)
    allowed = k_idx <= q_idx  # (T, past+T)
    if attention_mask is not None:
        allowed = (allowed & attention_mask[:, None, :].bool()) | (k_idx == q_idx)  # (B, T, past+T)
        return allowed[:, None]
    return allowed[None, None]


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(cfg.vocab_size, cfg.d_model),
            layers=nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer)),
            norm=RMSNorm(cfg.d_model, cfg.norm_eps),
        ))
        self.embed_dropout = nn.Dropout(cfg.dropout)
        # tied: logits use embed_tokens.weight directly, so there is no second name for the same tensor
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        std = self.cfg.init_std
        resid_std = std / math.sqrt(2 * self.cfg.n_layer)  # the residual stream sums 2 projections per layer
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=resid_std)
            elif p.dim() == 2:
                nn.init.normal_(p, mean=0.0, std=std)
            else:
                nn.init.ones_(p)  # RMSNorm gains

    def lm_logits(self, hidden):
        """(..., D) final hidden states -> (..., V) logits."""
        if self.lm_head is not None:
            return self.lm_head(hidden)  # a module call, so LoRA on "lm_head" applies
        return F.linear(hidden, self.model.embed_tokens.weight)

    def hidden_states(self, input_ids, *, attention_mask=None, position_ids=None, kv_cache=None):
        """(B, T) token ids -> (B, T, D) hidden states after the final norm.

        attention_mask: (B, past+T) 1/0, past = tokens already in kv_cache; None means no padding.
        position_ids: (B, T); by default counted from the mask (pads do not advance positions), else past + arange(T).
        kv_cache: a KVCache; the new keys/values are appended to its selected slots and their lengths advanced by T.
            Selected slots of different lengths take one token each (T = 1) and no attention_mask.
        """
        B, T = input_ids.shape
        past = kv_cache.length if kv_cache is not None else 0
        if kv_cache is not None and kv_cache.ragged:
            if attention_mask is not None or T != 1:
                raise ValueError("KV cache slots of different lengths take one token each and no attention_mask")
            return self._ragged_step(input_ids, kv_cache)
        if attention_mask is not None and attention_mask.shape != (B, past + T):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != (B, past+T) = {(B, past + T)}")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # (B, T)
            else:
                position_ids = torch.arange(past, past + T, device=input_ids.device).expand(B, T)
        # None lets SDPA use its causal kernel (or, for one new token without padding, attend to everything)
        mask = None
        if attention_mask is not None or (past > 0 and T > 1):
            mask = attention_bool_mask(attention_mask, past, T, input_ids.device)

        x = self.embed_dropout(self.model.embed_tokens(input_ids))  # (B, T, D)
        cos, sin = rope_cos_sin(position_ids, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)  # (B, T, hd)
        for block in self.model.layers:
            x = block(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.model.norm(x)

    def _ragged_step(self, input_ids, kv_cache):
        """One new token per row for cache slots of different lengths: positions and mask come from the slots."""
        mask, lengths = kv_cache.ragged_mask(input_ids.device)  # (B, 1, 1, L+1), (B,)
        x = self.embed_dropout(self.model.embed_tokens(input_ids))  # (B, 1, D)
        cos, sin = rope_cos_sin(lengths[:, None], self.cfg.head_dim, self.cfg.rope_theta, x.dtype)  # (B, 1, hd)
        for block in self.model.layers:
            x = block(x, cos, sin, mask, kv_cache)
        kv_cache.advance(1)
        return self.model.norm(x)

    def forward(self, input_ids, *, attention_mask=None, position_ids=None, kv_cache=None):
        """(B, T) token ids -> (B, T, V) logits; arguments as in `hidden_states`."""
        hidden = self.hidden_states(
            input_ids, attention_mask=attention_mask, position_ids=position_ids, kv_cache=kv_cache
        )
        return self.lm_logits(hidden)

    def make_kv_cache(self, batch_size: int, max_len: int) -> KVCache:
        p = self.model.embed_tokens.weight
        return KVCache(self.cfg, batch_size, max_len, device=p.device, dtype=p.dtype)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, each counted once; non_embedding leaves out the input embedding (an untied lm_head stays)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.model.embed_tokens.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs (forward + backward) per token at context length seq_len (PaLM appendix B, nanoGPT).

        6 * N for the weight matmuls, N = non-embedding parameters plus the output projection (an embedding lookup
        costs nothing, the lm_head matmul does whether tied or not), plus 12 * n_layer * d_model * seq_len for
        attention scores and weighted values (2 matmuls, 2 FLOPs per multiply-add, x3 for forward + backward;
        the causal half is not subtracted, as is the convention for MFU).
        """
        cfg = self.cfg
        n = self.num_params(non_embedding=True) + (cfg.vocab_size * cfg.d_model if self.lm_head is None else 0)
        return 6.0 * n + 12.0 * cfg.n_layer * cfg.d_model * seq_len


@torch.no_grad()
def resize_vocab(model: Decoder, vocab_size: int, new_ids) -> Decoder:
    """Grow `model` (in place, returned) to `vocab_size` embedding and output rows for tokens a tokenizer gained,
    and set the rows of `new_ids` (ids >= the old vocabulary, or unused rows below it) to the mean of the other
    old rows, in the input embedding and, when untied, the output layer: a new token starts as an average token,
    neither dominating the softmax nor pointing anywhere. Old tokens' rows, and so their logits, do not change."""
    old, new_ids = model.cfg.vocab_size, sorted(set(new_ids))
    if vocab_size < old or not new_ids or new_ids[-1] >= vocab_size:
        raise ValueError(f"resize_vocab grows a vocabulary of {old} to {vocab_size} rows for new ids {new_ids}")
    kept = torch.ones(old, dtype=torch.bool)
    kept[[i for i in new_ids if i < old]] = False

    def grown(weight: torch.Tensor) -> nn.Parameter:  # (old, D) -> (vocab_size, D)
        rows = torch.empty(vocab_size, weight.shape[1], dtype=weight.dtype, device=weight.device)
        rows[:old] = weight
        rows[new_ids] = weight[kept.to(weight.device)].float().mean(dim=0).to(weight.dtype)
        return nn.Parameter(rows, requires_grad=weight.requires_grad)

    embed = model.model.embed_tokens
    embed.weight, embed.num_embeddings = grown(embed.weight), vocab_size
    if model.lm_head is not None:
        model.lm_head.weight, model.lm_head.out_features = grown(model.lm_head.weight), vocab_size
    model.cfg.vocab_size = vocab_size
    return model
