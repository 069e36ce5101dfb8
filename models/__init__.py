"""Plain-PyTorch models: a Llama-style decoder, a BERT-style encoder, scalar heads, LoRA, KV-cache generation,
safetensors checkpoints and the Hugging Face Llama format. No Ray, no Hydra: `build_model(cfg)` takes a plain dict
(or an OmegaConf node) such as conf/model/*.yaml."""

from models.build import build_model
from models.checkpoint import (
    load_checkpoint,
    load_state,
    load_weights_into,
    save_checkpoint,
    save_state,
)
from models.decoder import Decoder, DecoderConfig, KVCache
from models.encoder import Encoder, EncoderConfig, SequenceClassifier
from models.generate import GenerationOutput, generate, stream_generate
from models.heads import RewardModel, ScalarHead, ValueModel
from models.hf_llama import export_hf_llama, import_hf_llama
from models.lora import LoRALinear, apply_lora, mark_only_lora_trainable, merge_lora

__all__ = [
    "build_model",
    "Decoder", "DecoderConfig", "KVCache",
    "Encoder", "EncoderConfig", "SequenceClassifier",
    "ScalarHead", "RewardModel", "ValueModel",
    "apply_lora", "mark_only_lora_trainable", "merge_lora", "LoRALinear",
    "generate", "stream_generate", "GenerationOutput",
    "save_checkpoint", "load_checkpoint", "load_weights_into", "save_state", "load_state",
    "export_hf_llama", "import_hf_llama",
]
