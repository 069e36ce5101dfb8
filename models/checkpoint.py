"""Checkpoints as directories of safetensors and JSON; nothing is pickled.

A checkpoint directory holds `model.safetensors` (the weights), `config.json` ({"kind": ..., "config": {dataclass
fields}}, plus "num_labels" for a classifier; see models/build.py), `meta.json` (a free dict: stage, step,
objective, ...) and, when given, `tokenizer.model` (the tokenizer's bytes, kept beside the weights that use it).
Features: `save_checkpoint` / `load_checkpoint` (rebuilt on the meta device, then the loaded tensors are assigned,
so no random init and no second copy of the weights); tied embeddings need nothing special because tied models
own a single tensor; `load_weights_into` an existing model, failing with a ValueError that names every missing,
unexpected or mis-shaped tensor with both shapes; `unwrap_model` strips torch.compile / DDP wrappers;
`save_state` / `load_state` store any nested dict/list/tuple of tensors and JSON values (optimizer, scheduler and
RNG state) as one safetensors file whose metadata carries the non-tensor skeleton.
"""

import json
import os

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from models.build import model_from_spec, model_spec

WEIGHTS, CONFIG, META, TOKENIZER = "model.safetensors", "config.json", "meta.json", "tokenizer.model"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile (`_orig_mod`) and DistributedDataParallel (`module`) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_tensors(file: str, tensors: dict, metadata: dict | None = None):
    """Tensors (any device) to one safetensors file; metadata is a str -> str dict stored in its header."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, file, metadata=metadata)


def load_tensors(file: str, *, map_location="cpu") -> dict:
    return load_file(file, device=str(map_location))


def _write_json(file: str, obj):
    with open(file, "w") as f:
        json.dump(obj, f, indent=2)


def _read_json(file: str):
    with open(file) as f:
        return json.load(f)


def save_checkpoint(path: str, model: nn.Module, *, tokenizer_model: bytes | None = None, meta: dict | None = None):
    """Write the checkpoint directory `path` (created if needed; files already there are overwritten)."""
    model = unwrap_model(model)
    os.makedirs(path, exist_ok=True)
    save_tensors(os.path.join(path, WEIGHTS), model.state_dict())
    _write_json(os.path.join(path, CONFIG), model_spec(model))
    _write_json(os.path.join(path, META), meta or {})
    if tokenizer_model is not None:
        with open(os.path.join(path, TOKENIZER), "wb") as f:
            f.write(tokenizer_model)


def load_checkpoint(path: str, *, map_location="cpu") -> tuple[nn.Module, dict]:
    """-> (model with the stored weights, dtype and device map_location, in train mode; meta dict)."""
    spec = _read_json(os.path.join(path, CONFIG))
    with torch.device("meta"):
        model = model_from_spec(spec)
    tensors = load_tensors(os.path.join(path, WEIGHTS), map_location=map_location)
    check_weights(model, tensors, path)
    model.load_state_dict(tensors, assign=True)
    meta_file = os.path.join(path, META)
    return model, (_read_json(meta_file) if os.path.exists(meta_file) else {})


def read_tokenizer_model(path: str) -> bytes | None:
    """The tokenizer bytes saved with a checkpoint, or None."""
    file = os.path.join(path, TOKENIZER)
    if not os.path.exists(file):
        return None
    with open(file, "rb") as f:
        return f.read()


def _listed(items: list[str], limit: int = 10) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def check_weights(model: nn.Module, tensors: dict, source: str):
    """ValueError naming missing, unexpected and mis-shaped tensors (with both shapes) if tensors don't fit model."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {shape}"
        for k, shape in expected.items() if k in tensors and tuple(tensors[k].shape) != shape
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch: " + _listed(mismatched))
    if missing:
        problems.append("missing from checkpoint: " + _listed(missing))
    if unexpected:
        problems.append("unexpected in checkpoint: " + _listed(unexpected))
    if problems:
        raise ValueError(f"weights in {source} do not fit {type(model).__name__}; " + "; ".join(problems))


def load_weights_into(model: nn.Module, path: str) -> nn.Module:
    """Copy weights from a checkpoint directory (or a .safetensors file) into model, in place; returns model."""
    file = os.path.join(path, WEIGHTS) if os.path.isdir(path) else path
    target = unwrap_model(model)
    tensors = load_tensors(file)
    check_weights(target, tensors, file)
    target.load_state_dict(tensors)
    return model


# ---- nested state (optimizer, scheduler, RNG) <-> tensors + JSON skeleton ----

def flatten_state(obj) -> tuple[dict, object]:
    """Nested dicts/lists/tuples of tensors and JSON values -> (tensors by path, JSON-able skeleton).

    In the skeleton a tensor is {"__tensor__": path}, a tuple {"__tuple__": [...]}, a dict with a non-string key
    (optimizer state is keyed by parameter index) {"__dict__": [[key, value], ...]}.
    """
    tensors: dict = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            key = path or "tensor"
            while key in tensors:  # e.g. keys 0 and "0" under one dict
                key += "+"
            tensors[key] = x
            return {"__tensor__": key}
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: walk(v, f"{path}/{k}") for k, v in x.items()}
            return {"__dict__": [[k, walk(v, f"{path}/{k}")] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path or '/'}: only tensors and JSON values")

    return tensors, walk(obj, "")


def unflatten_state(tensors: dict, skeleton):
    """Inverse of `flatten_state`."""
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, v) for v in skeleton]
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__tensor__"}:
            return tensors[skeleton["__tensor__"]]
        if set(skeleton) == {"__tuple__"}:
            return tuple(unflatten_state(tensors, v) for v in skeleton["__tuple__"])
        if set(skeleton) == {"__dict__"}:
            return {k: unflatten_state(tensors, v) for k, v in skeleton["__dict__"]}
        return {k: unflatten_state(tensors, v) for k, v in skeleton.items()}
    return skeleton


def save_state(file: str, obj):
    """A nested state (e.g. {"optimizer": opt.state_dict(), "rng": torch.get_rng_state()}) to one safetensors file."""
    tensors, skeleton = flatten_state(obj)
    save_tensors(file, tensors, metadata={"skeleton": json.dumps(skeleton)})


def load_state(file: str, *, map_location="cpu"):
    with safe_open(file, framework="pt", device=str(map_location)) as f:
        skeleton = json.loads(f.metadata()["skeleton"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return unflatten_state(tensors, skeleton)
