"""Models from plain config dicts, and the description of a built model that a checkpoint stores.

Features: `build_model` turns a dict such as conf/model/*.yaml ({"kind": ..., dataclass fields}) into a model,
rejecting unknown or missing keys with the list of allowed ones; `model_spec` / `model_from_spec` describe a model,
including the wrappers (sequence classifier, scalar model), as JSON and rebuild it, which is how
`config.json` in a checkpoint says what to construct.
"""

import dataclasses

import torch.nn as nn

from models.decoder import Decoder, DecoderConfig
from models.encoder import Encoder, EncoderConfig, SequenceClassifier
from models.heads import ScalarModel

MODELS = {"decoder": (DecoderConfig, Decoder), "encoder": (EncoderConfig, Encoder)}


def config_from_dict(config_cls, values: dict, what: str):
    """A config dataclass from a dict, with a clear error for unknown or missing keys."""
    fields = [f for f in dataclasses.fields(config_cls)]
    allowed = [f.name for f in fields]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ValueError(f"unknown {what} config key(s) {unknown}; allowed keys: {allowed}")
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [k for k in required if k not in values]
    if missing:
        raise ValueError(f"missing {what} config key(s) {missing}; allowed keys: {allowed}")
    return config_cls(**values)


def build_model(cfg) -> nn.Module:
    """{"kind": "decoder" | "encoder", **config fields} (a dict or any mapping, e.g. an OmegaConf node) -> model."""
    values = dict(cfg)
    kind = values.pop("kind", None)
    if kind not in MODELS:
        raise ValueError(f"model kind must be one of {sorted(MODELS)}, got {kind!r}")
    config_cls, model_cls = MODELS[kind]
    return model_cls(config_from_dict(config_cls, values, kind))


def model_spec(model: nn.Module) -> dict:
    """JSON-able description of a model: {"kind": ..., "config": {...}} (+ "num_labels" for a classifier)."""
    if isinstance(model, Decoder):
        return {"kind": "decoder", "config": dataclasses.asdict(model.cfg)}
    if isinstance(model, Encoder):
        return {"kind": "encoder", "config": dataclasses.asdict(model.cfg)}
    if isinstance(model, SequenceClassifier):
        return {"kind": "sequence_classifier", "config": dataclasses.asdict(model.encoder.cfg),
                "num_labels": model.num_labels}
    if isinstance(model, ScalarModel):
        return {"kind": "scalar_model", "config": dataclasses.asdict(model.decoder.cfg)}
    raise TypeError(f"no checkpoint description for {type(model).__name__}")


def model_from_spec(spec: dict) -> nn.Module:
    """Inverse of `model_spec` (weights freshly initialised)."""
    kind, values = spec.get("kind"), spec.get("config", {})
    if kind in MODELS:
        return build_model({"kind": kind, **values})
    if kind == "sequence_classifier":
        return SequenceClassifier(build_model({"kind": "encoder", **values}), spec["num_labels"])
    if kind == "scalar_model":
        return ScalarModel(build_model({"kind": "decoder", **values}))
    raise ValueError(f"unknown model kind {kind!r} in checkpoint config")
