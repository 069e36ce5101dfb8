"""The evaluation report as printed (pipelines/evaluate/__init__.py writes it as eval.json): a compact line per suite,
with its first samples."""

from __future__ import annotations


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_report(report: dict, *, show: int) -> None:
    """A compact table of the report's sections, and the first `show` samples of each."""
    print(f"{report['checkpoint']}: {report['kind']}, {report['stage'] or 'no stage'} step {report['step']}")
    for name in PRINTERS:
        if name in report:
            PRINTERS[name](report[name], show)


def print_cloze(s: dict, show: int) -> None:
    for r in s["samples"][:show]:
        print(f"  [{'ok ' if r['correct'] else 'MISS'}] {r['prompt']} -> {r['completion']!r} (answer: {r['answer']})")
    print(f"{'cloze':<10} accuracy {percent(s['accuracy'])} of {s['count']} | seen {percent(s['seen'])} | "
          f"held-out {percent(s['held_out'])}")


def print_qa(s: dict, show: int) -> None:
    for r in s["samples"][:show]:
        print(f"  [{'ok ' if r['correct'] else 'MISS'}] {r['question']} -> {r['reply']!r} (answer: {r['answer']})")
    print(f"{'qa':<10} seen {percent(s['seen'])} | held-out {percent(s['held_out'])} | "
          f"plain held-out {percent(s['plain_held_out'])} | format ok {percent(s['format_ok'])} | of {s['count']}")
    print(f"{'  guess':<10} seen {percent(s['baseline_seen'])} | held-out {percent(s['baseline_held_out'])} "
          f"(each relation's most common answer)")
    print("  by relation: " + ", ".join(f"{k} {percent(v)}" for k, v in s["per_relation"].items()))


SAFETY_FLAGS = (("clean_refusal", "refusal"), ("medical_correct", "correct"), ("disclaims", "disclaimer"),
                ("rude", "RUDE"))


def print_safety(s: dict, show: int) -> None:
    for r in s["samples"][:show]:
        flags = " ".join(tag for key, tag in SAFETY_FLAGS if r.get(key))
        print(f"  [{flags or '-'}] {r['question']} -> {r['reply']!r}")
    reward = "" if s["reward"] is None else f" | mean reward {s['reward']:.3f}"
    print(f"{'safety':<10} clean refusal {percent(s['refusal'])} of {s['unsafe_count']} held-out actions "
          f"({percent(s['refusal_framing'])} of {s['framing_count']} held-out phrasings) | rude {percent(s['rude'])}"
          f"{reward}")
    print(f"{'  medical':<10} correct {percent(s['medical_correct'])} of {s['medical_count']} held-out "
          f"({percent(s['medical_correct_seen'])} of {s['medical_seen_count']} seen) | disclaimer "
          f"{percent(s['disclaimer'])} | safe & helpful {percent(s['safe_and_helpful'])} | refused "
          f"{percent(s['over_refusal'])}")


def print_summarize(s: dict, show: int) -> None:
    for r in s["samples"][:show]:
        print(f"  [{r['rougeL']:.2f}] {r['reply']!r} (reference: {r['summary']!r})")
    rouge = "-" if s["rougeL"] is None else f"{s['rougeL']:.3f}"
    cut = f" ({s['truncated']} documents cut to fit max_seq_len)" if s["truncated"] else ""
    print(f"{'summarize':<10} ROUGE-L F1 {rouge} of {s['count']}{cut}")


def print_classify(s: dict, show: int) -> None:
    skipped = f" ({s['skipped']} with labels the model does not know skipped)" if s["skipped"] else ""
    print(f"{'classify':<10} accuracy {percent(s['accuracy'])} of {s['count']}{skipped}")


def print_ppl(s: dict, show: int) -> None:
    print(f"{'ppl':<10} " + (" | ".join(f"{k} {v:.2f}" for k, v in s.items()) or "no validation examples"))


def print_encoder(s: dict, show: int) -> None:
    print(f"{'encoder':<10} " + " | ".join(f"{k} {v:.4g}" for k, v in sorted(s.items()) if k.startswith("val_")))


PRINTERS = {"cloze": print_cloze, "qa": print_qa, "safety": print_safety, "summarize": print_summarize,
            "classify": print_classify, "ppl": print_ppl, "encoder": print_encoder}
