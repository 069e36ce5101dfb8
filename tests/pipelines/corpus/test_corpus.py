"""The built-in corpus generator: determinism, truth of the generated facts, eval/corpus consistency, held-out
hygiene and the file contract (manifest, parts, completeness check). Small sizes: the whole file runs in seconds."""

import bisect
import json
import random
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests_conf import CONF
from pipelines.corpus.writer import corpus_is_complete, ensure_corpus, main, write_corpus
from pipelines.text import split_sentences
from pipelines.corpus.general import DIET_FOOD, RELATIONS, build_entities, names_pattern
from pipelines.corpus import detectors
from pipelines.evaluate import judge
from pipelines.corpus.medical import CONDITIONS, DISCLAIMER
from pipelines.corpus.tasks import POLITE_CLOSINGS, POLITE_OPENERS, TOPICS, UNSAFE_PROMPTS
from pipelines.corpus.facts import ANIMALS, COUNTRIES, ELEMENTS, NUMBERS, PLANETS

SMALL = dict(general_docs=3 * len(build_entities()), medical_docs=100, docs_per_file=300, instruct_examples=400,
             preference_examples=200, classify_examples=120, summarize_examples=60)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts(root: Path, folder: str) -> list[str]:
    return [r["text"] for part in sorted((root / folder).glob("part-*.jsonl")) for r in read_jsonl(part)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    return root, write_corpus(root, seed=0, **SMALL)


def truth() -> dict[tuple[str, str], str]:
    """(relation, mention) -> value, straight from the tables (independent of the rendering code)."""
    facts = {}
    for c in COUNTRIES:
        mention = f"{c.article} {c.name}".strip()
        facts.update({("continent", mention): c.continent, ("capital", mention): c.capital})
        if c.language:
            facts["language", mention] = c.language
        if c.currency:
            facts["currency", mention] = c.currency
    for e in ELEMENTS:
        facts.update({("category", e.name): e.category, ("symbol", e.name): e.symbol,
                      ("atomic_number", e.name): str(e.number), ("state", e.name): e.state})
    for a in ANIMALS:
        m = f"the {a.name}"
        facts.update({("animal_class", m): a.animal_class, ("habitat", m): a.habitat, ("diet", m): DIET_FOOD[a.diet]})
    for p in PLANETS:
        facts.update({("order", p.name): p.order, ("planet_type", p.name): p.planet_type, ("moons", p.name): p.moons})
    for n in NUMBERS:
        s = str(n)
        facts.update({("parity", s): "odd" if n % 2 else "even", ("successor", s): str(n + 1),
                      ("predecessor", s): str(n - 1), ("double", s): str(2 * n)})
    return facts


def template_regex(template: str, subjects) -> re.Pattern:
    """A case-insensitive regex for sentences of `template`, the subject one of `subjects`."""
    subject = "(?P<s>" + "|".join(re.escape(m) for m in sorted(subjects, key=len, reverse=True)) + ")"
    pattern = re.escape(template)
    for field, group in (("s", subject), ("o", r"(?P<o>.+?)"), ("art", r"(?:a|an)"), ("k", r"(?P<k>\d+)")):
        placeholder = re.escape("{" + field + "}")
        pattern = pattern.replace(placeholder, group, 1).replace(placeholder, r"(?P=s)")  # "{s} plus {s}"
    return re.compile(pattern + "$", re.IGNORECASE)


ARITHMETIC = {"sum": lambda n, k: n + k, "product": lambda n, k: n * k, "difference": lambda n, k: n - k}


def parsers() -> list[tuple[str, re.Pattern]]:
    subjects = {}
    for relation, mention in truth():
        subjects.setdefault(relation, set()).add(mention)
    for relation in ARITHMETIC:
        subjects[relation] = {str(n) for n in NUMBERS}
    return [(rel, template_regex(t, subjects[rel])) for rel, r in RELATIONS.items() for t in r.templates]


def is_true(sentence: str, table, parsers) -> bool:
    """Whether some template parses `sentence` into a fact that the table (or arithmetic) confirms."""
    lowered = {(rel, subject.lower()): value for (rel, subject), value in table.items()}
    for relation, regex in parsers:
        m = regex.match(sentence)
        if not m:
            continue
        if relation in ARITHMETIC:
            if m["o"] == str(ARITHMETIC[relation](int(m["s"]), int(m["k"]))):
                return True
        elif lowered.get((relation, m["s"].lower())) == m["o"]:
            return True
    return False


def test_generated_sentences_are_true_to_the_tables(corpus):
    root, _ = corpus
    table, templates = truth(), parsers()
    docs = texts(root, "general")
    sample = docs[: len(build_entities())] + random.Random(0).sample(docs, 300)  # the canonical pass and others
    sentences = [s for doc in sample for s in split_sentences(doc)]
    false = [s for s in sentences if not is_true(s, table, templates)]
    assert not false, false[:5]
    assert len(sentences) > 2000
    # The check itself can fail: wrong facts and wrong sums are caught.
    for wrong in ("The capital of France is Berlin.", "Gold is a gas.", "The lion eats plants.", "7 plus 3 equals 11."):
        assert not is_true(wrong, table, templates), wrong


def test_table_rows_are_consistent():
    elements = [e.number for e in ELEMENTS]
    assert elements == sorted(set(elements)) and len({e.symbol for e in ELEMENTS}) == len(ELEMENTS)
    assert [p.order for p in PLANETS] == ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
    names = [e.name for e in build_entities() if e.kind != "number"]
    assert len(set(n.lower() for n in names)) == len(names)
    patterns = {name: names_pattern([name]) for name in names}
    for name in names:  # a name search must find only its own entity
        others = [o for o in names if o != name and patterns[name].search(o)]
        assert not others, (name, others)
    assert 250 <= len(build_entities()) and len(CONDITIONS) >= 30
    assert all(len(r.templates) >= 5 for r in RELATIONS.values())


def test_same_seed_same_bytes_other_seed_differs(corpus, tmp_path):
    root, manifest = corpus
    again = write_corpus(tmp_path / "again", seed=0, **SMALL)
    assert again["content_hash"] == manifest["content_hash"]
    for path in manifest["files"]:
        assert (root / path).read_bytes() == (tmp_path / "again" / path).read_bytes(), path
    other = write_corpus(tmp_path / "other", seed=1, **SMALL)
    assert other["content_hash"] != manifest["content_hash"]
    part = "general/part-00001.jsonl"
    assert other["files"][part]["sha256"] != manifest["files"][part]["sha256"]


def test_manifest_matches_files(corpus):
    root, manifest = corpus
    assert json.loads((root / "manifest.json").read_text()) == manifest
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.jsonl")}
    assert on_disk == set(manifest["files"])
    for path, stats in manifest["files"].items():
        data = (root / path).read_bytes()
        assert stats["bytes"] == len(data) and stats["lines"] == data.count(b"\n"), path
    general = [stats["lines"] for path, stats in manifest["files"].items() if path.startswith("general/")]
    assert sum(general) == SMALL["general_docs"]
    assert len(list((root / "general").glob("part-*.jsonl"))) == -(-SMALL["general_docs"] // SMALL["docs_per_file"])
    assert manifest["params"]["seed"] == 0 and manifest["params"]["general_docs"] == SMALL["general_docs"]


def test_cloze_prompts_are_completed_by_the_corpus(corpus):
    root, _ = corpus
    sentences = sorted({s for doc in texts(root, "general") for s in split_sentences(doc)})
    cloze = read_jsonl(root / "eval" / "cloze.jsonl")
    assert {c["held_out"] for c in cloze} == {True, False}
    for record in cloze:
        prefix = record["prompt"] + " "
        i = bisect.bisect_left(sentences, prefix)
        continuations = []
        while i < len(sentences) and sentences[i].startswith(prefix):
            continuations.append(sentences[i][len(prefix):])
            i += 1
        assert continuations, record
        # Greedy recall is possible: wherever the prompt starts a sentence, the answer follows.
        assert all(c.startswith(record["answer"]) for c in continuations), (record, continuations)
    assert any(c["prompt"] == "The capital of France is" and c["answer"] == "Paris" for c in cloze)


def test_held_out_entities_only_in_corpus_and_eval(corpus):
    root, manifest = corpus
    held = [name for names in manifest["held_out"].values() for name in names]
    assert all(manifest["held_out"][kind] for kind in ("country", "element", "animal", "planet"))
    pattern = names_pattern(held)
    for folder in ("instruct", "preference", "task"):
        for path in (root / folder).glob("*.jsonl"):
            for line in path.read_text().splitlines():
                assert not pattern.search(line), (path.name, pattern.search(line)[0], line)
    for record in read_jsonl(root / "instruct" / "train.jsonl"):
        assert record["domain"] in ("general", "medical", "unsafe")
        assert [m["role"] for m in record["messages"] if m["role"] != "system"] == ["user", "assistant"]
    general = " ".join(texts(root, "general"))
    for name in held:
        assert names_pattern([name]).search(general), name
    qa = read_jsonl(root / "eval" / "qa.jsonl")
    assert {r["entity"] for r in qa if r["held_out"]} == set(held)


def test_preference_ranking_structure(corpus):
    root, manifest = corpus
    labels_by_domain = {"general": ["polite_correct", "stray_disclaimer", "curt_correct", "rambling", "over_refusal",
                                    "rude", "off_topic", "garbled", "incorrect"],
                        "medical": ["polite_correct_disclaimer", "no_disclaimer", "curt_correct", "over_refusal", "rude",
                                    "off_topic", "garbled", "unsafe"],
                        "unsafe": ["polite_refusal", "stray_disclaimer", "curt_refusal", "rude_refusal", "off_topic",
                                   "garbled", "refusal_then_compliance", "unsafe_compliance"]}
    unsafe_prompts = {p for p, _ in UNSAFE_PROMPTS} - set(manifest["held_out_unsafe"])
    records = read_jsonl(root / "preference" / "train.jsonl")
    # Every response reaches the reward model and DPO: data.max_responses keeps the longest ranking whole.
    max_responses = OmegaConf.load(CONF / "data" / "builtin.yaml").max_responses
    assert {r["domain"] for r in records} == set(labels_by_domain)
    for r in records:
        assert r["labels"] == labels_by_domain[r["domain"]]
        assert len(set(r["responses"])) == len(r["responses"]) == len(r["labels"]) <= max_responses
        reply = dict(zip(r["labels"], r["responses"]))
        # What alignment is to learn is ranked first, as the detectors see it: the disclaimer on medical answers
        # only (a refusal or a general answer that carries it ranks below the same reply without it).
        disclaimed = [detectors.has_disclaimer(x) for label, x in reply.items() if label != "garbled"]
        medical = r["domain"] == "medical"
        assert disclaimed == ([True] + [False] * 6 if medical else [False, True] + [False] * (len(reply) - 3))
        if r["domain"] == "general":  # the answer, then more than was asked
            opener = next(o for o in POLITE_OPENERS if reply["polite_correct"].startswith(o + " "))
            closing = next(c for c in POLITE_CLOSINGS if reply["polite_correct"].endswith(" " + c))
            answer = reply["polite_correct"][len(opener) + 1:-len(closing) - 1]
            assert reply["rambling"].startswith(f"{opener} {answer} ") and not reply["rambling"].endswith(closing)
        # The second-best reply differs from the best by the disclaimer alone: missing, or where it does not belong.
        second = r["responses"][1]
        assert (r["responses"][0] == f"{second} {DISCLAIMER}" if medical else second == f"{r['responses'][0]} {DISCLAIMER}")
        # Refusing a harmless question ranks low, the refusal of harmful requests among such refusals.
        if r["domain"] != "unsafe":
            assert judge.refusal(reply["over_refusal"], r["prompt"]).value
        rude = "rude_refusal" if r["domain"] == "unsafe" else "rude"
        assert not detectors.is_rude(r["responses"][0]) and detectors.is_rude(reply[rude])
        assert len(reply["garbled"].split()) < len(r["responses"][0].split())  # garbled: cut off part-way
        if r["domain"] == "unsafe":
            assert r["prompt"] in unsafe_prompts
            assert detectors.is_polite_refusal(r["responses"][0]) and not detectors.is_refusal(r["responses"][-1])
            assert not detectors.is_refusal(reply["refusal_then_compliance"])  # it complies
    unsafe_eval = read_jsonl(root / "eval" / "unsafe.jsonl")
    assert {u["prompt"] for u in unsafe_eval if u["held_out"]} == set(manifest["held_out_unsafe"])


def test_task_sets(corpus):
    root, _ = corpus
    for split in ("train", "test"):
        records = read_jsonl(root / "task" / f"classify_{split}.jsonl")
        assert {r["label"] for r in records} == set(TOPICS), split
        summaries = read_jsonl(root / "task" / f"summarize_{split}.jsonl")
        assert summaries and all(len(split_sentences(s["summary"])) == 1 and s["document"] for s in summaries)


def test_consecutive_sentences_share_an_entity(corpus):
    root, _ = corpus
    patterns = {e.name: names_pattern([e.name]) for e in build_entities()}
    for doc in texts(root, "general")[:: 3]:
        sentences = split_sentences(doc)
        assert len(sentences) >= 2
        about = [{name for name, p in patterns.items() if p.search(s)} for s in sentences]
        for first, second in zip(about, about[1:]):
            assert first & second, doc
    for doc in texts(root, "medical"):
        condition = next(c for c in CONDITIONS if doc.lower().startswith(c.name.lower())
                         or f" {c.name.lower()} " in doc.split(".")[0].lower())
        assert condition.specialist in doc, doc


def test_completeness_check_and_reuse(tmp_path):
    out = tmp_path / "c"
    params = dict(SMALL, seed=3)
    assert not corpus_is_complete(out, params)
    manifest = ensure_corpus(out, **params)
    assert corpus_is_complete(out, params) and not corpus_is_complete(out, dict(params, seed=4))
    stamp = (out / "general" / "part-00000.jsonl").stat().st_mtime_ns
    assert ensure_corpus(out, **params) == manifest
    assert (out / "general" / "part-00000.jsonl").stat().st_mtime_ns == stamp  # reused, not rewritten
    (out / "medical" / "part-00000.jsonl").write_text("truncated")
    assert not corpus_is_complete(out, params)
    write_corpus(out, **dict(params, docs_per_file=10_000))  # fewer parts: stale ones must go
    assert sorted(p.name for p in (out / "general").iterdir()) == ["part-00000.jsonl"]
    (out / "manifest.json").unlink()
    assert not corpus_is_complete(out, dict(params, docs_per_file=10_000))
    with pytest.raises(TypeError):
        corpus_is_complete(out, {"general_doc": 1})


def test_rejects_too_few_documents(tmp_path):
    with pytest.raises(ValueError):
        write_corpus(tmp_path, general_docs=10)


def test_command_line(tmp_path, capsys):
    manifest = main(["--out", str(tmp_path), "--general-docs", str(SMALL["general_docs"]), "--seed", "2",
                     "--medical-docs", "10", "--instruct-examples", "20", "--preference-examples", "20",
                     "--classify-examples", "12", "--summarize-examples", "10"])
    assert manifest["params"]["seed"] == 2 and "MB/s" in capsys.readouterr().out
    assert corpus_is_complete(tmp_path, manifest["params"])


def test_split_sentences():
    assert split_sentences("France is a country in Europe. The capital of France is Paris.") == [
        "France is a country in Europe.", "The capital of France is Paris."]
    assert split_sentences("7 is an odd number. 7 plus 1 equals 8.") == ["7 is an odd number.", "7 plus 1 equals 8."]
    assert split_sentences("  ") == []


def test_instruction_data_teaches_answering_only(corpus, tmp_path):
    root, _ = corpus
    replies = {domain: [] for domain in ("general", "medical", "unsafe")}
    for record in read_jsonl(root / "instruct" / "train.jsonl"):
        replies[record["domain"]].append(record["messages"][-1]["content"])
    assert all(replies.values())
    everything = [reply for domain in replies.values() for reply in domain]
    assert not any(detectors.is_refusal(x) or detectors.has_disclaimer(x) or detectors.is_rude(x) for x in everything)
    # safety_share adds some refusals and disclaimers back.
    write_corpus(tmp_path, seed=0, **(SMALL | {"safety_share": 0.5}))
    shared = {domain: [] for domain in replies}
    for record in read_jsonl(tmp_path / "instruct" / "train.jsonl"):
        shared[record["domain"]].append(record["messages"][-1]["content"])
    refused = sum(map(detectors.is_polite_refusal, shared["unsafe"])) / len(shared["unsafe"])
    disclaimed = sum(map(detectors.has_disclaimer, shared["medical"])) / len(shared["medical"])
    assert 0.3 < refused < 0.7 and 0.3 < disclaimed < 0.7


def test_held_out_unsafe_prompts_and_conditions_never_in_training(corpus):
    root, manifest = corpus
    held_prompts, held_conditions = set(manifest["held_out_unsafe"]), manifest["held_out_conditions"]
    assert len(UNSAFE_PROMPTS) >= 200 and len(held_prompts) >= 50 and len(held_conditions) == 8
    condition = re.compile("|".join(re.escape(re.sub(r"^an? ", "", c)) for c in held_conditions), re.IGNORECASE)
    for folder in ("instruct", "preference", "task"):
        for path in (root / folder).glob("*.jsonl"):
            for line in path.read_text().splitlines():
                record = json.loads(line)
                prompt = record.get("prompt") or next((m["content"] for m in record.get("messages", [])
                                                       if m["role"] == "user"), None)
                assert prompt not in held_prompts, (path.name, prompt)
                assert not condition.search(line), (path.name, condition.search(line)[0], line)
    unsafe = read_jsonl(root / "eval" / "unsafe.jsonl")
    assert {u["prompt"] for u in unsafe if u["held_out"]} == held_prompts and len(unsafe) == len(UNSAFE_PROMPTS)
    medical = read_jsonl(root / "eval" / "medical.jsonl")
    asked = [m for m in medical if m["held_out"]]
    assert {m["condition"] for m in asked} == set(held_conditions) and len(asked) == 8 * 12
    # The medical corpus still describes them: the knowledge is there, the behaviour was never shown.
    corpus_text = " ".join(texts(root, "medical"))
    assert all(re.search(re.escape(c), corpus_text, re.IGNORECASE) for c in held_conditions)


def test_held_out_unsafe_actions_in_every_phrasing(corpus):
    """Two whole actions per category are held out (every phrasing of them); the framing-only held-out prompts
    share their action with training prompts, and say so."""
    root, manifest = corpus
    unsafe = read_jsonl(root / "eval" / "unsafe.jsonl")
    by_action = [u for u in unsafe if u["held_out_by"] == "action"]
    assert {u["action"] for u in by_action} == set(manifest["held_out_unsafe_actions"])
    assert len(manifest["held_out_unsafe_actions"]) == 2 * len({u["category"] for u in unsafe})
    assert len(by_action) == 6 * len(manifest["held_out_unsafe_actions"])  # every phrasing
    training_actions = set()
    for folder in ("instruct", "preference"):
        for path in (root / folder).glob("*.jsonl"):
            for record in read_jsonl(path):
                prompt = record.get("prompt") or next(m["content"] for m in record["messages"] if m["role"] == "user")
                training_actions |= {u["action"] for u in unsafe if u["prompt"] == prompt}
    assert training_actions and not training_actions & set(manifest["held_out_unsafe_actions"])
    framing = [u for u in unsafe if u["held_out_by"] == "framing"]
    assert framing and all(u["action"] not in manifest["held_out_unsafe_actions"] for u in framing)
    assert {u["held_out"] for u in unsafe if u["held_out_by"] is None} == {False}


def test_rankings_are_split_by_prompt(corpus):
    root, _ = corpus
    train = {r["prompt"] for r in read_jsonl(root / "preference" / "train.jsonl")}
    valid = [r["prompt"] for r in read_jsonl(root / "preference" / "valid.jsonl")]
    assert valid and not train & set(valid)


def test_the_command_line_names_itself_as_it_is_typed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m pipelines.corpus ")  # not "__main__.py"
