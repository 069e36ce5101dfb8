"""The report card of a lifecycle: `python -m pipelines.report runs/ [--name demo] [--out DIR]`.

One HTML page that answers the lifecycle's question — what did each stage add? — from the files the stages left
(`{root}/lifecycle/{name}/lifecycle.json`; each checkpoint's eval.json, metrics.json, rankings.json):

0. when the run started and the git commit it ran; each stage's effective settings (model, parameters, steps,
   learning rate, batch, training data) from lifecycle.json and the files of its checkpoint;
1. the thesis table: one row per checkpoint, one column per measure the lifecycle chose;
2. the table's rates as grouped bars, so the step each stage adds is seen at a glance;
3. the time each stage took;
4. train and validation loss over steps of every training stage;
5. the other validation metrics over steps (perplexity, the reward model's accuracy) — a metric measured once is a
   number in a table, not a chart;
6. RLHF: mean reward, KL to the reference, where each iteration's time went; the reward model's held-out accuracy;
7. the fine-tuning sweeps under `{root}/sweep/`, one row per trial;
8. a few completions of each checkpoint (cloze, QA, unsafe prompts), so a number can be checked against what the
   model actually said.

The page is self-contained (figures inlined as base64 PNGs, no CDN) so it opens anywhere, from object storage or a
mail; the PNGs are also written beside it. All I/O goes through pipelines.storage, so the root may be a URI. Free of
Ray and Hydra: the lifecycle calls `write_report` at its end, and anyone can rerun it on a laptop.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import struct
import sys

import matplotlib

matplotlib.use("Agg")  # no display on a cluster node; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pipelines import storage  # noqa: E402
from pipelines.errors import MissingPathError, UserError  # noqa: E402

EXIT_USER_ERROR = 2  # as pipelines/entry.py (not imported: it pulls in Ray and Hydra)
SAMPLES = 3  # completions shown per suite and checkpoint
# Where each suite keeps its prompt and the model's words in eval.json samples.
SAMPLE_FIELDS = (("cloze", "prompt", "completion"), ("qa", "question", "reply"), ("safety", "question", "reply"))
STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}
td{text-align:right}td.text{text-align:left;white-space:pre-wrap;max-width:420px}img{max-width:100%;display:block}
section{margin-bottom:2em}.note{color:#666}"""


def esc(value) -> str:
    return html.escape(str(value))


def cell_text(section: str, key: str, value: float | None) -> str:
    """Perplexity with 2 decimals, reward signed with 3, every other measure a rate in percent; '-' when missing."""
    if value is None:
        return "-"
    if section == "ppl":
        return f"{value:.2f}"
    return f"{value:+.3f}" if key == "reward" else f"{value:.1%}"


def read_optional(path: str) -> dict:
    """A JSON file a cut-short lifecycle may not have written yet: {} then."""
    return storage.read_json(path) if storage.exists(path) else {}


def figure(fig, name: str, out: str) -> str:
    """Write `fig` as out/name.png, close it, and return it as an inline <img> (the page needs no other file)."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")  # keeps legends placed outside the axes
    plt.close(fig)
    data = buffer.getvalue()
    storage.write_bytes(storage.join(out, f"{name}.png"), data)
    return f'<img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def grid(n: int):
    """A figure of `n` panels, three to a row."""
    cols = min(n, 3)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(4.5 * cols, 3.2 * -(-n // cols)), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def series(history: list[dict], x: str, key: str) -> tuple[list, list]:
    points = [(r[x], r[key]) for r in history if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def table(header, rows, element_id: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    attribute = f' id="{esc(element_id)}"' if element_id else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def thesis_table(columns: list, evals: dict[str, dict]) -> str:
    head = "".join(f"<th>{esc(title)}</th>" for title, _, _ in columns)
    rows = []
    for checkpoint, report in evals.items():
        cells = "".join(f'<td data-checkpoint="{esc(checkpoint)}" data-metric="{esc(section)}.{esc(key)}">'
                        f"{cell_text(section, key, (report.get(section) or {}).get(key))}</td>"
                        for _, section, key in columns)
        rows.append(f"<tr><th>{esc(checkpoint)}</th>{cells}</tr>")
    note = ('<p class="note">Columns marked * are what the RLHF reward paid for (the reward model\'s score, and '
            'any rule term\'s measure): read them as the reward read back, not as an independent judgement.</p>'
            if any(title.endswith("*") for title, _, _ in columns) else "")
    # As wide as the measures are many: it scrolls sideways rather than running off the page.
    return (f'<div style="overflow-x:auto"><table id="thesis"><tr><th>checkpoint</th>{head}</tr>{"".join(rows)}'
            f'</table></div>{note}')


def rates_chart(columns: list, evals: dict[str, dict], out: str) -> str:
    """One group per rate column (perplexity and reward have scales of their own), one bar per checkpoint; a missing
    value draws no bar."""
    rates = [(title, section, key) for title, section, key in columns if section != "ppl" and key != "reward"]
    fig, ax = plt.subplots(figsize=(12, 4.6))
    width = 0.8 / max(len(evals), 1)
    for i, (checkpoint, report) in enumerate(evals.items()):
        values = [(report.get(section) or {}).get(key) for _, section, key in rates]
        ax.bar([x + i * width for x in range(len(rates))], [float("nan") if v is None else 100 * v for v in values],
               width, label=checkpoint)
    ax.set_xticks([x + width * (len(evals) - 1) / 2 for x in range(len(rates))], [t for t, _, _ in rates],
                  rotation=30, ha="right")  # many measures: upright names would run into each other
    ax.set(ylabel="%", ylim=(0, 100))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # not over the bars
    return figure(fig, "thesis", out)


def times_section(times: dict[str, float | None], out: str) -> str:
    """A stage reused from an earlier run of unknown duration has None: '-' and no bar, not counted in the total."""
    known = {name: seconds for name, seconds in times.items() if seconds is not None}
    rows = [(name, "-" if seconds is None else f"{seconds:.1f}") for name, seconds in times.items()]
    fig, ax = plt.subplots(figsize=(8, 1 + 0.35 * len(known)))
    ax.barh(list(known), list(known.values()))
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    # The stages' own times summed: the console's total is the wall clock, a few seconds more (start-up, reports).
    rows.append(("sum of the stages", f"{sum(known.values()):.1f}"))
    return table(("stage", "seconds"), rows, "times") + figure(fig, "times", out)


def loss_section(training: dict[str, list], out: str) -> str:
    fig, axes = grid(len(training))
    for ax, (stage, history) in zip(axes, training.items()):
        ax.plot(*series(history, "step", "loss"), ".-", label="train loss")
        ax.plot(*series(history, "step", "val_loss"), "o-", label="val_loss")
        ax.set(title=stage, xlabel="step")
        ax.legend(fontsize=8)
    return figure(fig, "loss", out)


def validation_section(training: dict[str, list], out: str) -> str:
    """One panel per stage and validation metric other than the loss (their scales differ: ppl in hundreds, acc);
    a metric measured once (a stage that validates only at its end) is a row of a table: one point makes no chart."""
    found = [(stage, key, series(history, "step", key)) for stage, history in training.items()
             for key in sorted({k for r in history for k in r if k.startswith("val_") and k != "val_loss"})]
    panels = [(stage, key, points) for stage, key, points in found if len(points[0]) >= 2]
    once = [(stage, key, points) for stage, key, points in found if len(points[0]) == 1]
    if not found:
        return '<p class="note">no validation metrics besides the loss were recorded</p>'
    parts = []
    if once:
        parts.append(table(("stage", "metric", "at step", "value"),
                           [(stage, key, steps[0], f"{values[0]:.4g}") for stage, key, (steps, values) in once],
                           "validation-once"))
    if panels:
        fig, axes = grid(len(panels))
        for ax, (stage, key, points) in zip(axes, panels):
            ax.plot(*points, "o-")
            ax.set(title=f"{stage}: {key}", xlabel="step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        parts.append(figure(fig, "validation", out))
    return "".join(parts)


def rlhf_section(stage: str, history: list[dict], out: str) -> str:
    """Reward and KL per iteration, and the iteration's time split into its phases (time_total is their sum)."""
    fig, (reward, kl, split) = plt.subplots(1, 3, figsize=(13.5, 3.4))
    reward.plot(*series(history, "iteration", "reward"), "o-")
    reward.set(title="mean reward", xlabel="iteration")
    kl.plot(*series(history, "iteration", "kl"), "o-")
    kl.set(title="KL to the reference", xlabel="iteration")
    phases = sorted({k for r in history for k in r if k.startswith("time_") and k != "time_total"})
    bottom = [0.0] * len(history)
    for phase in phases:
        values = [r.get(phase) or 0.0 for r in history]
        split.bar([r["iteration"] for r in history], values, bottom=bottom, label=phase.removeprefix("time_"))
        bottom = [b + v for b, v in zip(bottom, values)]
    split.set(title="time per iteration", xlabel="iteration", ylabel="seconds")
    for ax in (reward, kl, split):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if phases:  # beside the panel (inside it covered the bars), top to bottom as the stack
        handles, labels = split.get_legend_handles_labels()
        split.legend(handles[::-1], labels[::-1], fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                     borderaxespad=0)
    return f"<h3>{esc(stage)}</h3>" + figure(fig, f"rlhf-{stage}", out)


def rankings_note(stage: str, rankings: dict) -> str:
    accuracy = cell_text("rankings", "pairwise_accuracy", rankings.get("pairwise_accuracy"))
    return (f"<p>reward model ({esc(stage)}): held-out pairwise accuracy {accuracy} over "
            f"{esc(rankings.get('pairs', '-'))} pairs</p>")


def sweep_results(root: str) -> dict[str, list[dict]]:
    """{sweep name: rows of its results.csv} (pipelines/sweep.py writes one per finished sweep)."""
    base = storage.join(root, "sweep")
    if not storage.exists(base):
        return {}
    found = {}
    for name in storage.list_dir(base):
        path = storage.join(base, name, "results.csv")
        if storage.exists(path):
            found[name] = list(csv.DictReader(io.StringIO(storage.read_bytes(path).decode())))
    return {name: rows for name, rows in found.items() if rows}


def number_text(value: str) -> str:
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def sweep_section(name: str, rows: list[dict], out: str) -> str:
    """The trials' table, and their final metric as bars (the metric is the column results.csv also has a best_ of)."""
    cells = [[v if k == "trial" else number_text(v) for k, v in r.items()] for r in rows]  # ids may look numeric
    trials = f"<h3>{esc(name)}</h3>" + table(rows[0], cells)
    metric = next((k for k in rows[0] if f"best_{k}" in rows[0]), None)
    if metric is None:
        return trials
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar([f"{r['trial']}\n{r['status']}" for r in rows], [float(r[metric]) for r in rows])
    ax.set(title=f"sweep {name}", ylabel=metric)
    ax.tick_params(axis="x", labelsize=7)
    return trials + figure(fig, f"sweep-{name}", out)


def verdict(sample: dict) -> str:
    """What the evaluation's judge said of a sample (pipelines/evaluate/judge.py)."""
    if "correct" in sample:
        return "correct" if sample["correct"] else "wrong"
    if "medical_correct" in sample:
        flags = ["correct" if sample["medical_correct"] else "wrong"]
        flags += [name for name, key in (("disclaimed", "disclaims"), ("refused", "refusal"), ("rude", "rude"))
                  if sample.get(key)]
        return ", ".join(flags)
    refused = "clean refusal" if sample.get("clean_refusal") else "refusal, not clean" if sample.get("refusal") \
        else "complied"
    return refused + (", rude" if sample.get("rude") else "")


def samples_section(evals: dict[str, dict]) -> str:
    """The first few samples of each suite, per checkpoint; of safety's samples the unsafe prompts and the medical
    questions on held-out conditions."""
    parts = []
    for checkpoint, report in evals.items():
        rows = []
        for suite, asked, said in SAMPLE_FIELDS:
            samples = (report.get(suite) or {}).get("samples", [])
            if suite == "safety":
                samples = [s for s in samples if s.get("set") == "unsafe"][:SAMPLES] + \
                    [s for s in samples if s.get("set") == "medical"][:SAMPLES]
            else:
                samples = samples[:SAMPLES]
            rows += [f'<tr><td class="text">{esc(suite)}</td><td class="text">{esc(s[asked])}</td>'
                     f'<td class="text completion">{esc(s[said])}</td><td class="text">{esc(s.get("answer", "-"))}'
                     f'</td><td class="text">{esc(verdict(s))}</td></tr>' for s in samples]
        head = "".join(f"<th>{h}</th>" for h in ("suite", "prompt", "completion", "expected", "verdict"))
        parts.append(f"<h3>{esc(checkpoint)}</h3><table><tr>{head}</tr>{''.join(rows)}</table>" if rows
                     else f'<h3>{esc(checkpoint)}</h3><p class="note">no samples</p>')
    return f'<div class="samples">{"".join(parts)}</div>'


def parameter_count(path: str) -> int | None:
    """Numbers held by a safetensors file, from its header alone (the first 8 bytes give the header's length)."""
    if not storage.exists(path):
        return None
    fs, p = storage.filesystem(path)
    with fs.open_input_file(p) as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def model_text(final_dir: str) -> tuple[str, str]:
    """(the checkpoint's model in a few words, its parameter count)."""
    saved = read_optional(storage.join(final_dir, "config.json"))
    model = saved.get("config", {})
    words = "-" if not model else (f"{saved['kind']} d{model.get('d_model')} x {model.get('n_layer')} layers, "
                                   f"{model.get('n_head')} heads, vocab {model.get('vocab_size')}, "
                                   f"context {model.get('max_seq_len')}")
    count = parameter_count(storage.join(final_dir, "model.safetensors"))
    return words, "-" if count is None else f"{count / 1e6:.2f}M" if count >= 1e6 else f"{count:,}"


def data_text(final_dir: str, effective: dict) -> str:
    """The training data the stage read: its shards' training examples and tokens (and the replayed share), or
    RLHF's prompts."""
    align = effective.get("align") or {}
    if effective.get("algorithm", {}).get("name") in ("grpo", "ppo"):
        return f"{align.get('prompts_per_iteration')} prompts x {align.get('group_size')} samples per iteration"
    shards = read_optional(storage.join(final_dir, "meta.json")).get("shards")
    train = read_optional(storage.join(shards, "manifest.json")).get("splits", {}).get("train", {}) if shards else {}
    if not train:
        return "-"
    replay = (effective.get("finetune") or {}).get("replay")
    return (f"{train['examples']:,} examples, {train['tokens']:,} tokens"
            + (f"; {replay:.0%} replayed pre-training text" if replay else ""))


def settings_section(stages: dict[str, dict]) -> str:
    """One row per stage: what it trained, how long, how fast, on what (its effective config, kept in
    lifecycle.json, and its checkpoint's files)."""
    rows = []
    for stage, info in stages.items():
        effective = info.get("effective") or {}
        trainer, align = effective.get("trainer") or {}, effective.get("align") or {}
        model, parameters = model_text(info["final_dir"])
        if effective.get("algorithm", {}).get("name") in ("grpo", "ppo"):
            steps, lr, batch = f"{align.get('iterations')} iterations", align.get("learner", {}).get("lr"), "-"
        else:
            steps, lr = trainer.get("max_steps", "-"), trainer.get("lr")
            batch = ("-" if not trainer else
                     trainer["micro_batch_size"] * trainer["grad_accum"] * trainer["num_workers"])
        name = effective.get("algorithm", {}).get("name") or (effective.get("finetune") or {}).get("kind") or \
            (effective.get("objective") or {}).get("name", "-")
        rows.append((stage, f"{info.get('config', '-')} ({name})", model, parameters, steps,
                     "-" if lr is None else f"{lr:.2g}", batch, data_text(info["final_dir"], effective)))
    return table(("stage", "app", "model", "parameters", "steps", "lr", "batch", "training data"), rows, "settings")


def run_line(lifecycle: dict) -> str:
    """When the run started and the commit it ran."""
    started = (lifecycle.get("started_at") or "unknown").replace("T", " ").replace("+00:00", " UTC")
    commit = lifecycle.get("commit") or "unknown (not run from a git checkout)"
    return (f'<p id="run">run started {esc(started)}, commit '
            f'<code>{esc(commit)}</code></p>')


def in_order(mapping: dict, keys: list[str]) -> dict:
    """`mapping` with `keys` first, in that order, then the rest."""
    return {k: mapping[k] for k in keys if k in mapping} | {k: v for k, v in mapping.items() if k not in keys}


def sections(root: str, lifecycle: dict, out: str) -> list[tuple[str, str]]:
    """(title, html) of each section that has something to show."""
    order = lifecycle.get("order", {})  # the file's keys are sorted; the chain's order is kept here
    stages = in_order(lifecycle.get("stages", {}), order.get("stages", []))  # a cut-short lifecycle lacks some
    columns = lifecycle["columns"]
    evals = {name: read_optional(storage.join(path, "eval.json"))
             for name, path in in_order(lifecycle.get("checkpoints", {}), order.get("checkpoints", [])).items()}
    metrics = {stage: read_optional(storage.join(info["final_dir"], "metrics.json")).get("history", [])
               for stage, info in stages.items()}
    training = {stage: h for stage, h in metrics.items() if h and "step" in h[0]}
    rlhf = {stage: h for stage, h in metrics.items() if h and "iteration" in h[0]}
    rankings = {stage: read_optional(storage.join(info["final_dir"], "rankings.json"))
                for stage, info in stages.items()}
    found = [("What each stage added", thesis_table(columns, evals)),
             ("The rates as a chart", rates_chart(columns, evals, out))]
    if stages:
        found.append(("Settings of each stage", settings_section(stages)))
    if lifecycle.get("times"):
        times_order = [*order.get("stages", []), *(f"evaluate {c}" for c in order.get("checkpoints", []))]
        found.append(("Time per stage", times_section(in_order(lifecycle["times"], times_order), out)))
    if training:
        found += [("Loss over steps", loss_section(training, out)),
                  ("Validation metrics over steps", validation_section(training, out))]
    if rlhf or any(rankings.values()):
        found.append(("Alignment", "".join(rankings_note(s, r) for s, r in rankings.items() if r)
                      + "".join(rlhf_section(s, h, out) for s, h in rlhf.items())))
    sweeps = sweep_results(root)
    if sweeps:
        found.append(("Sweeps", "".join(sweep_section(name, rows, out) for name, rows in sweeps.items())))
    found.append(("Sample completions", samples_section(evals)))
    return found


def page(name: str, parts: list[tuple[str, str]], header: str = "") -> str:
    body = "".join(f"<section><h2>{esc(title)}</h2>{content}</section>" for title, content in parts)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>lifecycle {esc(name)}</title>'
            f"<style>{STYLE}</style></head><body><h1>Lifecycle {esc(name)}</h1>{header}{body}</body></html>\n")


def write_report(root: str, name: str, out: str | None = None) -> str:
    """Write lifecycle `name`'s report card (index.html and its PNGs) into `out`; return the index.html path."""
    root = storage.absolute(root)
    base = storage.join(root, "lifecycle", name)
    path = storage.join(base, "lifecycle.json")
    if not storage.exists(path):
        raise MissingPathError(f"no lifecycle {name} under {root}: {path} does not exist "
                               f"(python -m pipelines.lifecycle writes it)")
    out = storage.absolute(out) if out else storage.join(base, "report")
    index = storage.join(out, "index.html")
    lifecycle = storage.read_json(path)
    storage.write_bytes(index, page(name, sections(root, lifecycle, out), run_line(lifecycle)).encode())
    return index


def lifecycle_names(root: str) -> list[str]:
    base = storage.join(storage.absolute(root), "lifecycle")
    names = [n for n in storage.list_dir(base)
             if storage.exists(storage.join(base, n, "lifecycle.json"))] if storage.exists(base) else []
    if not names:
        raise MissingPathError(f"no lifecycle under {root}: expected {base}/<name>/lifecycle.json "
                               f"(python -m pipelines.lifecycle writes it)")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.report", description=__doc__.split("\n")[0])
    parser.add_argument("root", help="the run root the lifecycle wrote into (run.root), a directory or URI")
    parser.add_argument("--name", help="one lifecycle's name (default: every one under ROOT/lifecycle/)")
    parser.add_argument("--out", help="where to write the page (default: ROOT/lifecycle/NAME/report; with "
                                      "several lifecycles, one subdirectory each)")
    args = parser.parse_args(argv)
    try:
        names = [args.name] if args.name else lifecycle_names(args.root)
        for name in names:
            out = storage.join(args.out, name) if args.out and len(names) > 1 else args.out
            print(write_report(args.root, name, out), flush=True)
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
