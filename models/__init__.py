"""Plain-PyTorch models: a Llama-style decoder, a BERT-style encoder, scalar heads, LoRA, KV-cache generation,
safetensors checkpoints and the Hugging Face Llama format. No Ray, no Hydra: `build_model(cfg)` takes a plain dict
(or an OmegaConf node) such as conf/model/*.yaml."""

import importlib

# Names exported here and the module that defines each. They are imported on first use (PEP 562), so that
# `from models.tokenizer import Tokenizer` — what Ray Data's tokenizer actors need — does not pay for torch.
# Generation is imported from its module (`from models.generate import generate`): a lazily exported function
# named like its module would be shadowed by the module once that is imported.
_EXPORTS = {
    "build_model": "build",
    "load_checkpoint": "checkpoint",
    "load_state": "checkpoint",
    "load_weights_into": "checkpoint",
    "save_checkpoint": "checkpoint",
    "save_state": "checkpoint",
    "Decoder": "decoder",
    "DecoderConfig": "decoder",
    "KVCache": "decoder",
    "resize_vocab": "decoder",
    "Encoder": "encoder",
    "EncoderConfig": "encoder",
    "SequenceClassifier": "encoder",
    "ScalarHead": "heads",
    "ScalarModel": "heads",
    "export_hf_llama": "hf_llama",
    "import_hf_llama": "hf_llama",
    "LoRALinear": "lora",
    "apply_lora": "lora",
    "mark_only_lora_trainable": "lora",
    "merge_lora": "lora",
    "lora_state_dict": "lora",
    "trained_state_dict": "lora",
    "save_adapters": "lora",
    "load_adapters": "lora",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")


__all__ = [
    "build_model",
    "Decoder", "DecoderConfig", "KVCache", "resize_vocab",
    "Encoder", "EncoderConfig", "SequenceClassifier",
    "ScalarHead", "ScalarModel",
    "apply_lora", "mark_only_lora_trainable", "merge_lora", "LoRALinear", "lora_state_dict", "trained_state_dict",
    "save_adapters", "load_adapters",
    "save_checkpoint", "load_checkpoint", "load_weights_into", "save_state", "load_state",
    "export_hf_llama", "import_hf_llama",
]
