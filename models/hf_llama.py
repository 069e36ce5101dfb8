"""Hugging Face Llama format for `Decoder`, without importing transformers.

Features: `export_hf_llama` writes `config.json` (LlamaConfig fields, both the transformers 4 `rope_theta` and the
transformers 5 `rope_parameters` spelling) and `model.safetensors` under the HF parameter names, which are ours; a
tied model writes no `lm_head.weight`, as `save_pretrained` does. `import_hf_llama` reads such a directory
(single-file or sharded `model.safetensors.index.json`) back into a `Decoder`; configurations our decoder cannot
reproduce (rope scaling, biases, an activation other than SiLU, a head_dim other than hidden/heads) raise
ValueError instead of loading into a silently different model.
"""

import json
import os

import torch

from models.checkpoint import check_weights, load_tensors, save_tensors
from models.decoder import Decoder, DecoderConfig


def export_hf_llama(model: Decoder, out_dir: str, *, bos_token_id: int | None = None,
                    eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None):
    cfg = model.cfg
    dtype = model.model.embed_tokens.weight.dtype
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.n_kv_head,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
        "dtype": str(dtype).removeprefix("torch."),  # transformers 5; 4 reads torch_dtype
        "torch_dtype": str(dtype).removeprefix("torch."),
        "use_cache": True,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    save_tensors(os.path.join(out_dir, "model.safetensors"), model.state_dict(), metadata={"format": "pt"})


def _rope_theta(hf: dict) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ValueError(f"rope type {rope_type!r} is not supported, only the default rotary embedding")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _read_weights(hf_dir: str) -> dict:
    index_file = os.path.join(hf_dir, "model.safetensors.index.json")
    if not os.path.exists(index_file):
        return load_tensors(os.path.join(hf_dir, "model.safetensors"))
    with open(index_file) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors = {}
    for shard in shards:
        tensors.update(load_tensors(os.path.join(hf_dir, shard)))
    return tensors


def import_hf_llama(hf_dir: str) -> Decoder:
    """A `Decoder` with the weights of an HF Llama checkpoint directory (safetensors only)."""
    with open(os.path.join(hf_dir, "config.json")) as f:
        hf = json.load(f)
    if hf.get("model_type", "llama") != "llama":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not llama")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError("Llama checkpoints with attention or MLP biases are not supported")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported, only silu")
    n_head = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // n_head
    if head_dim * n_head != hf["hidden_size"]:
        raise ValueError(f"head_dim {head_dim} x {n_head} heads != hidden_size {hf['hidden_size']}")
    cfg = DecoderConfig(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        d_ff=hf["intermediate_size"],
        max_seq_len=hf.get("max_position_embeddings", 2048),
        rope_theta=_rope_theta(hf),
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        init_std=hf.get("initializer_range", 0.02),
    )
    tensors = _read_weights(hf_dir)
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)  # some exports store the tied copy; ours owns one tensor
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}  # old exports
    with torch.device("meta"):
        model = Decoder(cfg)
    check_weights(model, tensors, hf_dir)
    model.load_state_dict(tensors, assign=True)
    return model
