"""Low-rank adaptation (LoRA, Hu et al. 2021) for any model built from nn.Linear.

Features: `apply_lora` swaps the nn.Linear modules whose names end with one of `targets` ("q_proj", "v_proj", ...)
for `LoRALinear`: y = base(x) + (alpha / rank) * B(A(dropout(x))), base frozen, A Kaiming-uniform, B zeros (so a
fresh adapter changes nothing); `mark_only_lora_trainable` freezes everything else but the modules it is told to
train in full (a new task head: frozen, it would stay at its random initialisation); `lora_state_dict` holds only
the adapters; `merge_lora` folds B @ A into the base weights and puts plain nn.Linear modules back under their
original names, so a merged model saves and loads like one that never had adapters; `save_adapters` /
`load_adapters` keep what a LoRA run trains — the adapters and any fully trained head —
(`adapter.safetensors` + `adapter_config.json`) beside a checkpoint.
"""

import json
import math
import os

import torch
import torch.nn as nn


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        self.base_requires_grad = base.weight.requires_grad  # restored by merge_lora
        base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # what nn.Linear uses for its own weight
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        # (..., in) -> (..., rank) -> (..., out)
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def merged(self) -> nn.Linear:
        """The base nn.Linear with B @ A * scaling added to its weight (in fp32, then cast back)."""
        w = self.base.weight
        delta = (self.lora_B.float() @ self.lora_A.float()) * self.scaling  # (out, in)
        with torch.no_grad():
            w.copy_((w.float() + delta).to(w.dtype))
        self.base.requires_grad_(self.base_requires_grad)
        return self.base


def _replace(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def apply_lora(model: nn.Module, *, rank: int, alpha: float, dropout: float, targets: list[str]) -> nn.Module:
    """Replace, in place, every nn.Linear named `...<target>` for a target in `targets`; returns model.

    Raises ValueError if no module matches, so a misspelt target fails loudly.
    """
    names = [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not names:
        linears = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear matches LoRA targets {list(targets)}; linear names: {linears}")
    for name in names:
        _replace(model, name, LoRALinear(model.get_submodule(name), rank=rank, alpha=alpha, dropout=dropout))
    return model


def mark_only_lora_trainable(model: nn.Module, also: tuple[nn.Module, ...] | list[nn.Module] = ()) -> nn.Module:
    """requires_grad on the adapter matrices and on every parameter of the modules `also` (a new head) only."""
    for name, p in model.named_parameters():
        p.requires_grad_("lora_A" in name or "lora_B" in name)
    for module in also:
        module.requires_grad_(True)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors, e.g. `model.layers.0.self_attn.q_proj.lora_A`."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def trained_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA run trains: the adapters and every other trainable parameter (a head trained in full)."""
    adapters = lora_state_dict(model)
    return adapters | {k: p.detach() for k, p in model.named_parameters() if p.requires_grad and k not in adapters}


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRALinear into its base weight and restore a plain nn.Linear under the same name; returns model."""
    names = [name for name, module in model.named_modules() if isinstance(module, LoRALinear)]
    for name in names:
        _replace(model, name, model.get_submodule(name).merged())
    return model


ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"


def save_adapters(path: str, model: nn.Module, settings: dict) -> None:
    """Write the adapter tensors (and a fully trained head's, `trained_state_dict`) and their settings (rank,
    alpha, dropout, targets) into the directory `path`."""
    from models.checkpoint import save_tensors

    os.makedirs(path, exist_ok=True)
    save_tensors(os.path.join(path, ADAPTER_WEIGHTS), trained_state_dict(model))
    with open(os.path.join(path, ADAPTER_CONFIG), "w") as f:
        json.dump(dict(settings), f, indent=2)


def load_adapters(model: nn.Module, path: str) -> nn.Module:
    """Copy the adapters (and a head) saved in `path` into `model` (which has LoRA applied with the same settings);
    a missing or mis-shaped adapter, or a tensor the model does not have, raises ValueError naming it."""
    from models.checkpoint import load_tensors

    tensors = load_tensors(os.path.join(path, ADAPTER_WEIGHTS))
    own = model.state_dict()
    missing = sorted(set(lora_state_dict(model)) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"adapters in {path} do not fit the model: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}, mis-shaped {shapes[:4]}")
    model.load_state_dict(tensors, strict=False)
    return model
