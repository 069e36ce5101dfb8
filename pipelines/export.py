"""Take the model anywhere: a decoder checkpoint as a Hugging Face Llama directory.

    python -m pipelines.export checkpoint=runs/align/<run> out=exports/assistant

`out` then holds what `transformers` needs and nothing of this project: `config.json` and `model.safetensors`
(models/hf_llama.py), `generation_config.json` (bos/eos/pad ids; `eos_token_id` is the project's stop rule, `<|end|>`
or eos; sampling defaults from conf/serve.yaml's `serve.generation`), the tokenizer (`tokenizer.model`, the
checkpoint's sentencepiece model, with `tokenizer_config.json` carrying the chat template as Jinja, and
`special_tokens_map.json`) and `README.md`, a model card. `AutoTokenizer.from_pretrained(out).apply_chat_template(
messages, add_generation_prompt=True)` gives the ids `Tokenizer.encode_chat` gives, and `AutoModelForCausalLM`
greedy-generates what `models.generate` does and stops where it stops (tests/pipelines/test_export.py checks both in
a process that imports nothing of this project).

Text that contains a chat marker such as `<|end|>` is text in this project (control symbols are never produced by
encoding text), but transformers matches special tokens inside any text it tokenizes. The chat template therefore
writes every `<` of a message as U+FF1C (fullwidth `<`), which no special token matches and which the tokenizer's
own NFKC normalisation (sentencepiece's `nmt_nfkc`, carried into the tokenizer transformers builds) turns back into
`<` before the text is split into pieces: the ids are those of the literal text, as ours are.

The checkpoint (a run or checkpoint directory, local or a URI) is found and loaded by pipelines/checkpoints.py; `out`
is a local directory, written under a temporary name beside it and moved into place when complete. Encoders,
classifiers and scalar (reward) models have no Llama equivalent and are refused in one line, as are a missing
checkpoint and a non-empty `out` (unless force=true).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from omegaconf import DictConfig

from models.decoder import DecoderConfig
from models.hf_llama import export_hf_llama
from models.tokenizer import CONTROL_SYMBOLS, ROLES, Tokenizer
from pipelines import checkpoints, storage
from pipelines.entry import stage_main
from pipelines.errors import ConfigError

FULLWIDTH_LT = "\uff1c"  # NFKC maps it to "<"; see the module docstring
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in " + repr(list(ROLES)) + " -%}"
    "{{ raise_exception('chat role must be one of " + ", ".join(ROLES) + ", got ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>' + (message['content'] | replace('<', '" + FULLWIDTH_LT + "')) + '<|end|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)
def check_out(out: str, *, force: bool, checkpoint: str) -> str:
    """`out` as an absolute local path that may be written (refusing URIs, files and non-empty directories)."""
    if storage.is_uri(out):
        raise ConfigError(f"out={out} is a URI, but export writes a local directory: export to a local out= and copy "
                          f"it to object storage (e.g. aws s3 cp --recursive)")
    out = storage.absolute(out)
    if os.path.isfile(out):
        raise ConfigError(f"out={out} is a file: give a directory path")
    if os.path.isdir(out) and os.listdir(out):
        if not force:
            raise ConfigError(f"out={out} is not empty: choose a new directory, or add force=true to replace what it "
                              f"holds")
        if not storage.is_uri(checkpoint) and os.path.commonpath([out, storage.absolute(checkpoint)]) == out:
            raise ConfigError(f"out={out} holds the checkpoint {checkpoint}: force=true would delete it; choose "
                              f"another out=")
    return out


def generation_config(tok: Tokenizer, generation: DictConfig) -> dict:
    """transformers' GenerationConfig: stop at <|end|> or eos (as the project does), the server's sampling."""
    config = {"bos_token_id": tok.bos_id, "eos_token_id": list(tok.stop_ids), "pad_token_id": tok.pad_id,
              "max_new_tokens": generation.max_tokens, "do_sample": generation.temperature > 0}
    if generation.temperature > 0:
        # top_k=0: no top-k cut, as our sampler (transformers' own default would be 50)
        config |= {"temperature": generation.temperature, "top_p": generation.top_p, "top_k": 0}
    return config


def tokenizer_files(tok: Tokenizer, max_len: int) -> dict[str, dict]:
    """tokenizer_config.json and special_tokens_map.json for the sentencepiece model saved as tokenizer.model."""
    sp = tok.sp
    specials = {"pad_token": sp.id_to_piece(tok.pad_id), "unk_token": sp.id_to_piece(tok.unk_id),
                "bos_token": sp.id_to_piece(tok.bos_id), "eos_token": sp.id_to_piece(tok.eos_id)}
    # The control symbols this tokenizer has: a foreign one extended for chat (models.tokenizer.add_special_tokens)
    # has no <mask>/<cls>/<sep>, and naming them would add tokens the model has no rows for.
    control = [c for c in CONTROL_SYMBOLS if tok.sp.is_control(tok.sp.piece_to_id(c))]
    added = {str(i): {"content": sp.id_to_piece(i), "lstrip": False, "rstrip": False, "normalized": False,
                      "single_word": False, "special": True}
             for i in sorted({tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, *(sp.piece_to_id(c) for c in control)})}
    config = {
        # Built from tokenizer.model by transformers (>= 5), with sentencepiece's normaliser, byte fallback and a
        # dummy prefix before each text between special tokens, as our per-message encoding has.
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "additional_special_tokens": control,
        "added_tokens_decoder": added,
        "add_bos_token": True,  # plain text as pre-training saw documents: <bos> text
        "add_eos_token": False,
        "legacy": True,
        "add_prefix_space": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
        "padding_side": "left",
        "chat_template": CHAT_TEMPLATE,
    }
    return {"tokenizer_config.json": config,
            "special_tokens_map.json": {**specials, "additional_special_tokens": control}}


def lineage(checkpoint_dir: str, meta: dict, limit: int = 10) -> list[dict]:
    """The checkpoint's training stages, last first: its meta, then the meta of each `init_from` still readable."""
    stages, seen = [meta], {checkpoint_dir}
    while len(stages) < limit and (parent := stages[-1].get("init_from")) and parent not in seen:
        seen.add(parent)
        meta_file = storage.join(parent, "meta.json")
        if not storage.exists(meta_file):
            stages.append({"stage": "(not readable)", "run": parent})
            break
        stages.append(storage.read_json(meta_file))
    return stages


def describe_stage(meta: dict) -> str:
    what = meta.get("finetune") or meta.get("algorithm") or meta.get("objective")
    parts = [meta.get("stage", "?") + (f" ({what})" if what else "")]
    if meta.get("run"):
        parts.append(f"run {meta['run']}")
    if meta.get("step") is not None:
        parts.append(f"{meta['step']} steps")
    if meta.get("iteration") is not None:
        parts.append(f"{meta['iteration']} iterations")
    return ", ".join(parts)


def model_card(*, checkpoint: str, cfg: DecoderConfig, n_params: int, tok: Tokenizer, stages: list[dict],
               generation: dict) -> str:
    c = vars(cfg)
    trained = "\n".join(f"{i}. {describe_stage(m)}" for i, m in enumerate(reversed(stages), 1))
    return f"""# lmlife model export

A small decoder-only language model (Llama architecture) trained with lmlife, a project that runs a language
model's whole life on Ray: pre-training, fine-tuning, alignment, serving. Its training stages are listed below. It
is a demonstration of that life cycle, not a useful assistant.

**Not medical advice.** The medical text it learned from is generated by a program and may be wrong or incomplete;
nothing this model writes is medical advice. Ask a qualified professional.

## Model
- parameters: {n_params:,} ({c['n_layer']} layers, hidden {c['d_model']}, {c['n_head']} heads, {c['n_kv_head']} key/value
  heads, feed-forward {c['d_ff']}, tied embeddings: {str(c['tie_embeddings']).lower()})
- context: {c['max_seq_len']} tokens; vocabulary: {tok.vocab_size} sentencepiece pieces
- exported from: `{checkpoint}`

## Training stages (first to last)
{trained}

## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("<this directory>")
model = AutoModelForCausalLM.from_pretrained("<this directory>")
ids = tok.apply_chat_template([{{"role": "user", "content": "What is the capital of France?"}}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=False)
out = model.generate(ids)   # generation_config.json: {json.dumps(generation)}
print(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
```
The chat format is `<s><|role|>text<|end|>...<|assistant|>`; a reply ends at `<|end|>` (or `</s>`), the
`eos_token_id` list of generation_config.json. Needs transformers >= 5, which builds the tokenizer from
`tokenizer.model` with sentencepiece's own normalisation.

A chat marker typed inside a message (`<|end|>`, `<|user|>`, `<s>`) is encoded as the text it is, never as the
marker: the chat template writes each `<` of a message as `\\uff1c` (fullwidth), which the tokenizer normalises
back to `<`; no `sanitize_control_tokens=True` is needed (it would cut the text at a marker and so change the ids
of text such as `x</s>`). Plain `tok(text)` does what transformers always does and matches special tokens in the
text; pass `split_special_tokens=True` to encode them as text.
"""


def export(loaded: checkpoints.Loaded, out: str, *, generation: DictConfig) -> dict:
    """Write the Hugging Face directory `out` (absolute, local) from a loaded decoder checkpoint; returns the
    generation config."""
    model, tok = loaded.model, loaded.tok
    gen = generation_config(tok, generation)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.export-")
    try:
        export_hf_llama(model, tmp, bos_token_id=tok.bos_id, eos_token_id=list(tok.stop_ids), pad_token_id=tok.pad_id)
        with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
            f.write(tok.model_proto)
        files = {"generation_config.json": gen, **tokenizer_files(tok, model.cfg.max_seq_len)}
        for name, content in files.items():
            with open(os.path.join(tmp, name), "w") as f:
                json.dump(content, f, indent=2, ensure_ascii=False)
        card = model_card(checkpoint=loaded.path, cfg=model.cfg, n_params=sum(p.numel() for p in model.parameters()),
                          tok=tok, stages=lineage(loaded.path, loaded.meta), generation=gen)
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write(card)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return gen


@stage_main("export")
def main(cfg: DictConfig) -> str:
    out = check_out(cfg.out, force=cfg.force, checkpoint=cfg.checkpoint)
    loaded = checkpoints.load(cfg.checkpoint, kinds=("decoder",), purpose="a Hugging Face Llama export")
    export(loaded, out, generation=cfg.serve.generation)
    print(f"exported {loaded.path} -> {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
