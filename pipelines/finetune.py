"""Stage 3 — fine-tuning: `python -m pipelines.finetune finetune=<kind> init_from=runs/pretrain/<run>`.

One stage for every kind (`conf/finetune/<kind>.yaml` picks the records, the objective and the head):
- `instruct`  — instruction tuning (SFT) on chat records, loss on assistant tokens only (decoder);
- `domain`    — continued causal-LM training on the medical corpus, perplexity before and after (decoder);
- `summarize` — document -> summary as a chat turn, loss on the summary only (decoder);
- `classify`  — a sequence classifier on a pre-trained encoder (`finetune.random_init=true`: the same model from
                random weights, the baseline that shows what pre-training is worth).

The recipe is pre-training's: check everything that needs no Ray (the checkpoint, its kind against the kind of
fine-tuning, its tokenizer against given shards, LoRA settings, the run name), join Ray, build or reuse shards —
always with the tokenizer saved in the `init_from` checkpoint, never a new one — and train with the shared Ray
Train loop and driver. `finetune.lora.rank > 0` trains LoRA adapters only (decoders); `final/` then holds the
merged weights (a plain model) and the adapters beside them. `init_from` may also be a Hugging Face Llama
directory: it is converted once into `{run}/init/` with its sentencepiece tokenizer (a `tokenizer.model` in the
directory, or `tokenizer.path`), this project's or the model's own, which gains the chat markers and a pad token
it lacks (`convert_hf`). Runs land in `runs/finetune/<run.name>/final`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict

from cluster.connect import connect
from models.tokenizer import Tokenizer, add_special_tokens
from pipelines import checkpoints, storage
from pipelines.data.build import check_data_config, prepare_shards, record_labels
from pipelines.data.shards import read_manifest
from pipelines.entry import stage_main
from pipelines.errors import CheckpointError, ConfigError, MissingPathError
from pipelines.train.driver import (TrainOutcome, check_config, check_worker_resources, fit, preflight,
                                    print_summary, replay_part, run_directory)

log = logging.getLogger(__spec__.name)  # not "__main__" under `python -m`
# The model kind each kind of fine-tuning starts from.
KINDS = {"instruct": "decoder", "domain": "decoder", "summarize": "decoder", "classify": "encoder",
         "reward": "decoder", "dpo": "decoder"}
# Kinds that put a head on the pre-trained model, and the checkpoint kind of a model that already has it.
HEADS = {"classify": "sequence_classifier", "reward": "scalar_model"}
TOKENIZER = "tokenizer.model"


@dataclass
class Plan:
    """What `plan` found: the checkpoint to start from and how its weights are used."""

    init_from: str  # a checkpoint directory of this project (converted when the user gave a HF directory)
    base_kind: str  # "decoder" or "encoder": the model under any head
    head: dict | None
    init_into: str  # "base" or "model" (see pipelines/train/loop.py:construct)
    tokenizer_sha256: str
    lora: dict | None
    meta: dict
    replay: dict | None


def is_hf_llama(path: str) -> bool:
    config = storage.join(path, "config.json")
    return storage.exists(config) and "model_type" in storage.read_json(config)


def convert_hf(cfg: DictConfig, path: str, stage: str) -> str:
    """A HF Llama directory converted into this project's checkpoint under `{run}/init` (once); returns it.

    Its sentencepiece tokenizer (`tokenizer.model` there, or `tokenizer.path`) may be the model's own: the chat
    markers and a pad piece it lacks are appended after its vocabulary (`add_special_tokens`), the embeddings and
    output layer grow to match with mean-initialised rows, and the extended tokenizer is saved beside the weights
    as in every checkpoint; meta.json's `added_tokens` names the new pieces and their ids."""
    target = storage.join(run_directory(cfg, stage), "init")
    if storage.exists(storage.join(target, "model.safetensors")):
        return target
    tokenizer = cfg.tokenizer.path or (storage.join(path, TOKENIZER) if storage.exists(storage.join(path, TOKENIZER))
                                       else None)
    if not tokenizer:
        raise CheckpointError(f"init_from={path} is a Hugging Face Llama directory without a tokenizer.model: give "
                              f"tokenizer.path= (the model's sentencepiece tokenizer)")
    try:
        extended, added = add_special_tokens(storage.read_bytes(storage.absolute(tokenizer)))
        tok = Tokenizer(extended)
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"{tokenizer}: not a usable sentencepiece tokenizer ({error})") from None
    from models import import_hf_llama, resize_vocab, save_checkpoint

    with storage.local_dir(path) as local:
        try:
            model = import_hf_llama(local)
        except ValueError as error:
            raise CheckpointError(f"init_from={path}: {error}") from None
    source_size = tok.vocab_size - len(added)
    if model.cfg.vocab_size < source_size:
        raise CheckpointError(f"init_from={path} has {model.cfg.vocab_size} embeddings, fewer than the tokenizer's "
                              f"{source_size} pieces ({tokenizer})")
    if added:
        resize_vocab(model, max(model.cfg.vocab_size, tok.vocab_size), added.values())
        log.info("added %s to the tokenizer of %s (ids %d..%d); the model now has %d embeddings", ", ".join(added),
                 path, min(added.values()), max(added.values()), model.cfg.vocab_size)
    meta = {"stage": "hf_import", "source": path, "tokenizer_source": tokenizer, "added_tokens": added}
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, model, tokenizer_model=tok.model_proto, meta=meta)
        storage.upload_dir(tmp, target)
    log.info("converted the Hugging Face Llama checkpoint %s into %s", path, target)
    return target


def plan(cfg: DictConfig, stage: str = "finetune") -> Plan:
    """Every check that needs no Ray; fills in cfg.model (the checkpoint's) and cfg.tokenizer.path (its
    tokenizer). Raises a one-line UserError on the first problem. `stage` names the run directory (the alignment
    stage trains its reward model and DPO with this same recipe)."""
    kind = cfg.finetune.kind
    if kind not in KINDS:
        raise ConfigError(f"finetune.kind must be one of {sorted(KINDS)}, got {kind!r} (finetune=<kind>)")
    if OmegaConf.is_missing(cfg, "init_from") or not cfg.init_from:
        raise ConfigError("fine-tuning needs init_from= (a pre-trained run or checkpoint directory, or a Hugging Face "
                          "Llama directory)")
    source = storage.absolute(cfg.init_from)
    if not storage.exists(source):
        raise MissingPathError(f"init_from={cfg.init_from} does not exist")
    path = convert_hf(cfg, source, stage) if is_hf_llama(source) else checkpoints.resolve(source, "init_from")
    saved = storage.read_json(storage.join(path, "config.json"))
    wanted = KINDS[kind]
    head, init_into, base_kind = None, "base", saved["kind"]
    if kind == "classify":
        labels = record_labels(cfg.data)
        head = {"kind": "sequence_classifier", "num_labels": len(labels)}
        if saved["kind"] == "sequence_classifier" and saved["num_labels"] != len(labels):
            raise CheckpointError(f"init_from={path} classifies {saved['num_labels']} labels, the data has "
                                  f"{len(labels)} ({labels})")
    if kind == "reward":
        head = {"kind": "scalar"}
    if kind in HEADS and saved["kind"] == HEADS[kind]:  # a model with this head, trained further
        base_kind, init_into = wanted, "model"
    if base_kind != wanted:
        raise CheckpointError(f"{'finetune' if stage == 'finetune' else 'algorithm'}={kind} starts from a "
                              f"pre-trained {wanted}, but init_from={path} holds a "
                              f"{saved['kind']}" + (" (pre-train one with objective=mlm_nsp model=encoder_tiny)"
                                                    if wanted == "encoder" else ""))
    if not storage.exists(storage.join(path, TOKENIZER)):
        raise CheckpointError(f"init_from={path} has no tokenizer.model: fine-tuning uses the checkpoint's own "
                              f"tokenizer")
    tokenizer_path = storage.join(path, TOKENIZER)
    tok_sha = Tokenizer(storage.read_bytes(tokenizer_path)).sha256
    if cfg.tokenizer.path and not is_hf_llama(source) and \
            Tokenizer(storage.read_bytes(storage.absolute(cfg.tokenizer.path))).sha256 != tok_sha:
        raise CheckpointError(f"tokenizer.path={cfg.tokenizer.path} is not the tokenizer of init_from={path}; "
                              f"fine-tuning always uses the checkpoint's tokenizer (drop tokenizer.path)")
    model_cfg = {"kind": base_kind, **saved["config"]}
    if base_kind == "decoder" and model_cfg["max_seq_len"] < cfg.data.seq_len:
        model_cfg["max_seq_len"] = cfg.data.seq_len  # rotary positions: nothing to resize, only the bound
    lora = OmegaConf.to_container(cfg.finetune.lora, resolve=True)
    if not isinstance(lora["rank"], int) or lora["rank"] < 0:
        raise ConfigError(f"finetune.lora.rank must be a whole number >= 0 (0 = full fine-tuning), got {lora['rank']!r}")
    if lora["rank"]:
        if base_kind != "decoder":
            raise ConfigError(f"LoRA (finetune.lora.rank={lora['rank']}) is for decoder fine-tuning; "
                              f"finetune={kind} trains an {base_kind}: set finetune.lora.rank=0")
        if not lora["targets"]:
            raise ConfigError("finetune.lora.targets is empty: name the linear layers to adapt (e.g. [q_proj, v_proj])")
    with open_dict(cfg):
        cfg.model = model_cfg
        cfg.tokenizer.path = tokenizer_path
    preflight(cfg, stage=stage, init_from=path if init_into == "base" else None)
    if cfg.shards:
        manifest = given_shards(cfg, tok_sha)
        if kind == "classify" and manifest.get("labels") != record_labels(cfg.data):
            raise ConfigError(f"shards={cfg.shards} hold labels {manifest.get('labels')}, the data config "
                              f"{record_labels(cfg.data)}")
    else:
        check_data_config(cfg)
    replay = replay_shards(cfg, path, tok_sha)
    meta = {"finetune": kind, "init_from": path, "random_init": bool(cfg.finetune.random_init),
            "replay": replay["share"] if replay else 0.0, "replay_from": replay["source"] if replay else None,
            "replay_mix": replay.get("mix") if replay else None}
    if kind == "classify":
        meta["labels"] = record_labels(cfg.data)
    return Plan(init_from=path, base_kind=base_kind, head=head, init_into=init_into, tokenizer_sha256=tok_sha,
                lora=lora if lora["rank"] else None, meta=meta, replay=replay)


def replay_shards(cfg: DictConfig, init_from: str, tokenizer_sha256: str) -> dict | None:
    """`finetune.replay` > 0: training blocks of pre-training's causal-LM shards — those `finetune.replay_from` (a
    run or checkpoint; null = init_from) was trained on — mixed into fine-tuning, so that what pre-training taught
    (facts of entities fine-tuning never mentions) is rehearsed: into chat examples (instruct, summarize), or into
    another corpus's blocks (domain). The text pre-training mixed in (its `mix`) is replayed too, in its share."""
    share = cfg.finetune.replay
    if not share:
        return None
    fmt = cfg.objective.shard_format
    if not 0 < share < 1 or fmt not in ("sft", "clm"):
        raise ConfigError(f"finetune.replay={share}: a share in (0, 1) of pre-training text mixed into fine-tuning "
                          f"(finetune=instruct, summarize or domain); set 0 for finetune={cfg.finetune.kind}")
    given = cfg.finetune.get("replay_from")
    source = checkpoints.resolve(given, "finetune.replay_from") if given else init_from
    meta_file = storage.join(source, "meta.json")
    source_meta = storage.read_json(meta_file) if storage.exists(meta_file) else {}
    where = source_meta.get("shards")
    manifest = read_manifest(where) if where else None
    if not manifest or manifest["format"] != "clm" or manifest["tokenizer"]["sha256"] != tokenizer_sha256:
        raise ConfigError(f"finetune.replay needs the causal-LM shards {source} was pre-trained on, with its "
                          f"tokenizer (its meta.json names {where!r}); set finetune.replay=0")
    if fmt == "clm" and manifest["seq_len"] != cfg.data.seq_len:
        raise ConfigError(f"finetune.replay into causal-LM blocks of data.seq_len={cfg.data.seq_len} tokens: "
                          f"{manifest['dir']} holds blocks of {manifest['seq_len']}; set data.seq_len to that")
    if manifest["seq_len"] + 1 > cfg.data.seq_len + 1:
        log.warning("replayed blocks of %d tokens are cut to data.seq_len + 1 = %d", manifest["seq_len"] + 1,
                    cfg.data.seq_len + 1)
    replay = {"share": float(share), "source": source, "parts": [replay_part(manifest)]}
    mix = source_meta.get("mix")
    mixed = read_manifest(mix["shards"]) if mix else None
    if mixed:  # pre-training mixed another subset in (conf/pretrain.yaml, mix): replayed in the same proportion
        replay["parts"] = [replay_part(manifest, 1 - mix["share"]), replay_part(mixed, mix["share"])]
        replay["mix"] = {"subset": mix["subset"], "share": mix["share"]}
    return replay


def given_shards(cfg: DictConfig, tokenizer_sha256: str) -> dict:
    """The manifest of `shards=DIR`, checked against the model and the checkpoint's tokenizer."""
    manifest = read_manifest(storage.absolute(cfg.shards))
    if manifest is None:
        raise MissingPathError(f"shards={cfg.shards}: no manifest.json there (build shards with python -m pipelines.data)")
    if manifest["tokenizer"]["sha256"] != tokenizer_sha256:
        raise CheckpointError(f"shards={cfg.shards} were built with another tokenizer ({manifest['tokenizer']['path']}) "
                              f"than init_from's: token ids would mean other pieces; drop shards= to build them "
                              f"with the checkpoint's tokenizer")
    check_config(OmegaConf.to_container(cfg.model, resolve=True), OmegaConf.to_container(cfg.objective, resolve=True),
                 manifest, cfg.data.seq_len)
    return manifest


def finetune(cfg: DictConfig, *, callbacks: list | None = None, stage: str = "finetune") -> TrainOutcome:
    """Check, join Ray, build/reuse the shards with the checkpoint's tokenizer, train; returns the outcome."""
    p = plan(cfg, stage)
    connect(cfg.cluster)
    check_worker_resources(cfg)
    manifest = given_shards(cfg, p.tokenizer_sha256) if cfg.shards else prepare_shards(cfg)
    train = manifest["splits"]["train"]
    log.info("fine-tuning (%s) on %d training examples (training records: %d dropped as too long, %d truncated)",
             cfg.finetune.kind, train["examples"], train.get("dropped_too_long", 0), train.get("truncated", 0))
    return fit(cfg, stage=stage, manifest=manifest,
               init_from=None if cfg.finetune.random_init else p.init_from, head=p.head, lora=p.lora,
               init_into=p.init_into, meta=p.meta, train_examples=cfg.finetune.train_examples, replay=p.replay,
               callbacks=callbacks)


def report_domain_shift(cfg: DictConfig, outcome: TrainOutcome) -> None:
    """Domain adaptation's two numbers: medical and general validation perplexity before and after (the gain in
    the domain, and what was forgotten of general text); the `ppl` sections also land in both eval.json files."""
    from pipelines.evaluate import evaluate

    before_dir = storage.read_json(storage.join(outcome.final_dir, "meta.json"))["init_from"]
    before = evaluate(cfg, before_dir, suites=["ppl"])["ppl"]
    after = evaluate(cfg, outcome.final_dir, suites=["ppl"])["ppl"]
    for corpus in ("medical", "general"):
        if corpus in before and corpus in after:
            print(f"{corpus} validation perplexity: {before[corpus]:.2f} -> {after[corpus]:.2f}")


@stage_main("finetune")
def main(cfg: DictConfig) -> None:
    outcome = finetune(cfg)
    print_summary(outcome)
    if cfg.finetune.kind == "domain" and cfg.data.source == "builtin":
        report_domain_shift(cfg, outcome)


if __name__ == "__main__":
    main()
