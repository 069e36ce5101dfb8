"""Finding and loading a checkpoint: the one place every stage turns "a run or a checkpoint directory" into a model.

A *checkpoint directory* holds `model.safetensors`, `config.json`, `meta.json` and `tokenizer.model` (see
models/checkpoint.py); a *run directory* holds one as `final/`. Both may be local paths or URIs (s3://, gs://).
`resolve` finds the checkpoint directory a setting names, `read_spec` its config.json without loading weights (what
a driver checks before Ray starts), `load` the model (eval mode, on a device), its tokenizer and meta. Evaluation,
serving, export and the RLHF roles load through here, so none of them needs anything of the training stage.

The plain-PyTorch half (safetensors and JSON, no storage) stays in models/checkpoint.py; this module adds what a
cluster needs: URIs, run directories, and one-line errors that name the setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models import load_checkpoint
from models.checkpoint import CONFIG, TOKENIZER, WEIGHTS
from models.tokenizer import Tokenizer
from pipelines import storage
from pipelines.errors import CheckpointError, MissingPathError

FINAL = "final"
# What each kind of checkpoint is, for errors that say what was found instead of what was asked for.
KINDS = {"decoder": "a causal LM (pre-trained, fine-tuned or aligned)", "encoder": "an encoder (MLM / NSP)",
         "sequence_classifier": "a classifier", "scalar_model": "a reward model"}


def resolve(path: str | None, setting: str = "checkpoint") -> str | None:
    """The checkpoint directory `path` names: itself, or `path/final` when it is a run directory. `setting` names
    the option that gave it, for the error."""
    if not path:
        return None
    path = storage.absolute(str(path))
    if storage.exists(storage.join(path, FINAL, WEIGHTS)):
        return storage.join(path, FINAL)
    if not storage.exists(storage.join(path, WEIGHTS)):
        what = "does not exist" if not storage.exists(path) else "holds no checkpoint"
        raise MissingPathError(f"{setting}={path} {what}: give a checkpoint directory (with {WEIGHTS}) or a run "
                               f"directory (with {FINAL}/{WEIGHTS})")
    return path


def read_spec(path: str) -> dict:
    """config.json of the checkpoint directory `path`: {"kind", "config", ...}, read without the weights."""
    return storage.read_json(storage.join(path, CONFIG))


def require_kind(path: str, spec: dict, kinds: tuple[str, ...], *, setting: str, purpose: str) -> None:
    """One line when the checkpoint at `path` is not of one of `kinds` ("serving needs a decoder ...")."""
    if spec["kind"] not in kinds:
        found = KINDS.get(spec["kind"], spec["kind"])
        wanted = " or ".join(KINDS.get(k, k) for k in kinds)
        raise CheckpointError(f"{setting}={path} holds {found}: {purpose} needs {wanted}")


def tokenizer_file(path: str, *, setting: str = "checkpoint") -> str:
    """The checkpoint's tokenizer.model, which must be there: every stage saves it beside the weights."""
    file = storage.join(path, TOKENIZER)
    if not storage.exists(file):
        raise CheckpointError(f"{setting}={path} has no {TOKENIZER}: every stage saves its tokenizer beside the "
                              f"weights; was this directory copied without it?")
    return file


def read_tokenizer(path: str, *, setting: str = "checkpoint") -> Tokenizer:
    return Tokenizer(storage.read_bytes(tokenizer_file(path, setting=setting)))


def check(checkpoint: str | None, *, setting: str = "checkpoint", kinds: tuple[str, ...] | None = None,
          purpose: str = "this stage") -> tuple[str, dict]:
    """Everything that can be known without loading weights (on the driver, before Ray starts): the checkpoint
    exists, is of one of `kinds` and carries its tokenizer. -> (checkpoint directory, its config.json)."""
    if not checkpoint:
        raise MissingPathError(f"{setting}= is required: a run directory (runs/<stage>/<run>) or a checkpoint "
                               f"directory")
    path = resolve(checkpoint, setting)
    spec = read_spec(path)
    if kinds:
        require_kind(path, spec, kinds, setting=setting, purpose=purpose)
    tokenizer_file(path, setting=setting)
    return path, spec


@dataclass
class Loaded:
    """A checkpoint in memory: the model in eval mode, its tokenizer, meta.json and where it came from."""

    path: str
    model: torch.nn.Module
    tok: Tokenizer
    meta: dict
    kind: str


def load(checkpoint: str, *, setting: str = "checkpoint", kinds: tuple[str, ...] | None = None,
         purpose: str = "this stage", device: torch.device | str = "cpu") -> Loaded:
    """The checkpoint a run or checkpoint directory (local or URI) names, checked against `kinds`, loaded."""
    path, spec = check(checkpoint, setting=setting, kinds=kinds, purpose=purpose)
    with storage.local_dir(path) as local:
        model, meta = load_checkpoint(local)
        tok = read_tokenizer(local, setting=setting)
    return Loaded(path, model.to(device).eval(), tok, meta, spec["kind"])
