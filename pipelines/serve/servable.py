"""Can this checkpoint be served? Checked from its files alone (no torch, no Ray, no Serve), so that the command
checks it on the driver before Ray starts — a wrong path or a reward model is one line, not replicas that fail and
are retried — and each ingress replica checks it again where it runs."""

from __future__ import annotations

from pipelines import storage
from pipelines.errors import CheckpointError


def servable(checkpoint: str) -> tuple[str, dict]:
    """(checkpoint directory, its config.json) when `checkpoint` (a checkpoint or run directory, local or a URI)
    exists, holds a decoder and its tokenizer; else MissingPathError / CheckpointError."""
    from pipelines.train.driver import resolve_init_from

    path = resolve_init_from(checkpoint, "checkpoint")
    spec = storage.read_json(storage.join(path, "config.json"))
    if spec["kind"] != "decoder":
        raise CheckpointError(f"checkpoint={path} holds a {spec['kind']}: serving needs a decoder (a "
                              f"pre-trained, instruction-tuned or aligned causal LM)")
    if not storage.exists(storage.join(path, "tokenizer.model")):
        raise CheckpointError(f"checkpoint={path} has no tokenizer.model: serving needs the checkpoint's tokenizer")
    return path, spec
