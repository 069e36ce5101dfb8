"""General-knowledge documents for the built-in corpus: the fact tables of pipelines.corpus.facts rendered as sentences.

Each entity (a country, an element, an animal, a planet, a number) becomes a list of facts; each fact is
rendered once per paraphrase template, ahead of time, so that writing a document is only a few random choices
and a join (that is what makes tens of MB a second possible). A document is about one entity: its first
sentence introduces the entity (the "intro" relation: a country's continent, an animal's class, ...) and every
following sentence names the entity again, so consecutive sentences always belong together.

The first template of every relation is the canonical one: the answer comes after the entity ("The capital of
France is Paris.", "Mars is the fourth planet from the Sun.") and each entity's canonical document uses only
those, so the text before the answer is a cloze prompt that the corpus completes the same way wherever it occurs.
"""

import functools
import hashlib
import json
import re
from typing import NamedTuple

from pipelines.corpus.facts import ANIMALS, COUNTRIES, ELEMENTS, NUMBERS, PLANETS


class Relation(NamedTuple):
    templates: tuple[str, ...]  # {s}: the entity as said mid-sentence, {o}: the answer, {art}: its article, {k}
    questions: tuple[str, ...]


class Fact(NamedTuple):
    relation: str
    value: str  # the answer a cloze prompt or a question expects
    sentences: tuple[str, ...]  # one per template of the relation, in template order; [0] is canonical
    questions: tuple[str, ...]
    core: bool  # core facts make up the canonical document and the eval sets; extras only vary documents
    prompt: str  # canonical sentence up to the answer: "The capital of France is" (the cloze prompt)


class Entity(NamedTuple):
    kind: str  # country, element, animal, planet or number
    name: str  # the name searched for (held-out checks) and reported in eval records
    mention: str  # how a sentence says it mid-sentence: "the lion", "the United States", "gold"
    topic: str  # classification label of its sentences
    facts: tuple[Fact, ...]  # facts[0] is the intro; core facts come before extras
    n_core: int  # facts[:n_core] are the core facts


KIND_TOPICS = {
    "country": "geography",
    "element": "chemistry",
    "animal": "animals",
    "planet": "astronomy",
    "number": "arithmetic",
}
# Kinds whose entities can be held out; numbers cannot (their digits occur everywhere).
HELD_OUT_KINDS = ("country", "element", "animal", "planet")

# What an animal's diet means in words: the value of its "diet" fact.
DIET_FOOD = {"carnivore": "other animals", "herbivore": "plants", "omnivore": "both plants and animals"}

RELATIONS = {
    "continent": Relation(
        ("{s} is a country in {o}.", "{s} is located in {o}.", "{s} lies in {o}.",
         "You can find {s} in {o}.", "{s} is one of the countries of {o}."),
        ("Which continent is {s} in?", "On which continent is {s}?", "Where is {s} located?"),
    ),
    "capital": Relation(
        ("The capital of {s} is {o}.", "{o} is the capital of {s}.", "The capital city of {s} is {o}.",
         "{s} has its capital in {o}.", "{o} is the capital city of {s}."),
        ("What is the capital of {s}?", "Which city is the capital of {s}?", "Name the capital of {s}."),
    ),
    "language": Relation(
        ("People in {s} speak {o}.", "The main language of {s} is {o}.", "{o} is the main language of {s}.",
         "Most people in {s} speak {o}.", "In {s}, the main language is {o}."),
        ("What language do people in {s} speak?", "What is the main language of {s}?",
         "Which language do most people in {s} speak?"),
    ),
    "currency": Relation(
        ("The currency of {s} is the {o}.", "People in {s} pay with the {o}.", "{s} uses the {o} as its currency.",
         "The {o} is the currency of {s}.", "In {s}, the currency is the {o}."),
        ("What is the currency of {s}?", "Which currency is used in {s}?", "What money do people use in {s}?"),
    ),
    "category": Relation(
        ("{s} is a {o}.", "Chemists classify {s} as a {o}.", "In the periodic table, {s} is a {o}.",
         "{s} is classified as a {o}.", "The element {s} is a {o}."),
        ("What kind of element is {s}?", "Is {s} a metal, a nonmetal, a metalloid or a noble gas?"),
    ),
    "symbol": Relation(
        ("The chemical symbol of {s} is {o}.", "The symbol for {s} is {o}.", "{s} has the chemical symbol {o}.",
         "Chemists write {s} with the symbol {o}.", "The symbol {o} stands for {s}."),
        ("What is the chemical symbol of {s}?", "Which symbol stands for {s}?", "How do chemists write {s}?"),
    ),
    "atomic_number": Relation(
        ("The atomic number of {s} is {o}.", "{s} has the atomic number {o}.", "{s} has atomic number {o}.",
         "The number of protons in an atom of {s} is {o}.", "In the periodic table, {s} has the number {o}."),
        ("What is the atomic number of {s}?", "How many protons are in an atom of {s}?"),
    ),
    "state": Relation(
        ("At room temperature, {s} is a {o}.", "Under normal conditions, {s} is a {o}.",
         "{s} exists as a {o} at room temperature.", "{s} takes the form of a {o} at room temperature.",
         "In its pure form at room temperature, {s} is a {o}."),
        ("Is {s} a solid, a liquid or a gas at room temperature?", "What state is {s} in at room temperature?"),
    ),
    "animal_class": Relation(
        ("{s} is {art} {o}.", "Biologists classify {s} as {art} {o}.", "{s} counts as {art} {o}.",
         "Scientists describe {s} as {art} {o}.", "In biology, {s} is classified as {art} {o}."),
        ("What kind of animal is {s}?", "Which class of animals does {s} belong to?"),
    ),
    "habitat": Relation(
        ("{s} lives {o}.", "{s} makes its home {o}.", "You can find {s} {o}.", "{s} is usually found {o}.",
         "{s} spends its life {o}."),
        ("Where does {s} live?", "Where can you find {s}?"),
    ),
    "diet": Relation(
        ("{s} eats {o}.", "{s} feeds on {o}.", "The diet of {s} consists of {o}.", "{s} survives by eating {o}.",
         "For food, {s} depends on {o}."),
        ("What does {s} eat?", "What is the diet of {s}?"),
    ),
    "order": Relation(
        ("{s} is the {o} planet from the Sun.", "Counting outward from the Sun, {s} is the {o} planet.",
         "{s} orbits the Sun as the {o} planet.", "In order from the Sun, {s} comes {o}.",
         "The {o} planet from the Sun is {s}."),
        ("Which planet from the Sun is {s}?", "In order from the Sun, where does {s} come?"),
    ),
    "planet_type": Relation(
        ("{s} is {art} {o}.", "Astronomers classify {s} as {art} {o}.", "{s} counts as {art} {o}.",
         "Scientists describe {s} as {art} {o}.", "By its type, {s} is {art} {o}."),
        ("What type of planet is {s}?", "What kind of planet is {s}?"),
    ),
    "moons": Relation(
        ("{s} has {o}.", "Astronomers know that {s} has {o}.", "The planet {s} has {o}.", "In total, {s} has {o}.",
         "Observations show that {s} has {o}."),
        ("How many moons does {s} have?", "Does {s} have any moons?"),
    ),
    "parity": Relation(
        ("{s} is an {o} number.", "The number {s} is {o}.", "{s} counts as an {o} number.",
         "We call {s} an {o} number.", "Mathematicians say that {s} is {o}."),
        ("Is {s} an even or an odd number?", "Is the number {s} even or odd?"),
    ),
    "successor": Relation(
        ("The number after {s} is {o}.", "After {s} comes {o}.", "The next number after {s} is {o}.",
         "Counting up from {s}, the next number is {o}.", "{s} is followed by {o}."),
        ("What number comes after {s}?", "What is the next number after {s}?"),
    ),
    "predecessor": Relation(
        ("The number before {s} is {o}.", "Just before {s} comes {o}.",
         "Counting down from {s}, the next number is {o}.",
         "{s} comes right after {o}.", "{s} minus 1 equals {o}."),
        ("What number comes before {s}?", "Which number comes just before {s}?"),
    ),
    "double": Relation(
        ("{s} plus {s} equals {o}.", "Two times {s} is {o}.", "Twice {s} is {o}.", "Doubling {s} gives {o}.",
         "{s} multiplied by 2 is {o}."),
        ("What is {s} plus {s}?", "What is twice {s}?"),
    ),
    "sum": Relation(
        ("{s} plus {k} equals {o}.", "{s} plus {k} is {o}.", "Adding {k} to {s} gives {o}.",
         "The sum of {s} and {k} is {o}.", "If you add {k} to {s}, you get {o}."),
        ("What is {s} plus {k}?", "What do you get if you add {k} to {s}?"),
    ),
    "product": Relation(
        ("{s} times {k} equals {o}.", "{s} multiplied by {k} is {o}.", "The product of {s} and {k} is {o}.",
         "Multiplying {s} by {k} gives {o}.", "If you multiply {s} by {k}, you get {o}."),
        ("What is {s} times {k}?", "What do you get if you multiply {s} by {k}?"),
    ),
    "difference": Relation(
        ("{s} minus {k} equals {o}.", "{s} minus {k} is {o}.", "Taking {k} away from {s} leaves {o}.",
         "If you subtract {k} from {s}, you get {o}.", "The difference between {s} and {k} is {o}."),
        ("What is {s} minus {k}?", "What do you get if you subtract {k} from {s}?"),
    ),
}


def capitalize(text: str) -> str:
    """Upper-case the first character only ("the lion lives" -> "The lion lives"; str.capitalize lowers the rest)."""
    return text[:1].upper() + text[1:]


def make_fact(relation: str, mention: str, value: str, *, art: str = "", k: str = "", core: bool = True) -> Fact:
    """Render one fact in every template of its relation (and its questions)."""
    rel = RELATIONS[relation]
    fields = {"s": mention, "o": value, "art": art, "k": k}
    sentences = tuple(capitalize(t.format(**fields)) for t in rel.templates)
    for sentence in sentences:
        # Documents are written by joining pre-rendered sentences into a JSON string without escaping them.
        if json.dumps(sentence)[1:-1] != sentence:
            raise ValueError(f"sentence needs JSON escaping: {sentence!r}")
    questions = tuple(capitalize(q.format(**fields)) for q in rel.questions)
    prompt = capitalize(rel.templates[0].split("{o}")[0].format(**fields)).rstrip()
    if not sentences[0].startswith(f"{prompt} {value}"):
        raise ValueError(f"canonical template must read prompt, then answer: {rel.templates[0]!r}")
    return Fact(relation, value, sentences, questions, core, prompt)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_entity(kind: str, name: str, mention: str, facts) -> Entity:
    facts = tuple(facts)
    n_core = sum(f.core for f in facts)
    if not all(f.core for f in facts[:n_core]):
        raise ValueError(f"core facts of {name} must come first")
    return Entity(kind, name, mention, KIND_TOPICS[kind], facts, n_core)


def country_entity(row) -> Entity:
    mention = f"{row.article} {row.name}".strip()
    facts = [make_fact("continent", mention, row.continent), make_fact("capital", mention, row.capital)]
    if row.language:
        facts.append(make_fact("language", mention, row.language))
    if row.currency:
        facts.append(make_fact("currency", mention, row.currency))
    return make_entity("country", row.name, mention, facts)


def element_entity(row) -> Entity:
    facts = (
        make_fact("category", row.name, row.category),
        make_fact("symbol", row.name, row.symbol),
        make_fact("atomic_number", row.name, str(row.number)),
        make_fact("state", row.name, row.state),
    )
    return make_entity("element", row.name, row.name, facts)


def animal_entity(row) -> Entity:
    mention = f"the {row.name}"
    facts = (
        make_fact("animal_class", mention, row.animal_class, art=article(row.animal_class)),
        make_fact("habitat", mention, row.habitat),
        make_fact("diet", mention, DIET_FOOD[row.diet]),
    )
    return make_entity("animal", row.name, mention, facts)


def planet_entity(row) -> Entity:
    facts = (
        make_fact("order", row.name, row.order),
        make_fact("planet_type", row.name, row.planet_type, art=article(row.planet_type)),
        make_fact("moons", row.name, row.moons),
    )
    return make_entity("planet", row.name, row.name, facts)


def number_entity(n: int) -> Entity:
    s = str(n)
    facts = [
        make_fact("parity", s, "even" if n % 2 == 0 else "odd"),
        make_fact("successor", s, str(n + 1)),
        make_fact("predecessor", s, str(n - 1)),
        make_fact("double", s, str(2 * n)),
    ]
    # Extras: the operations with small operands, so that documents about a number vary a lot.
    for k in range(1, 11):
        facts.append(make_fact("sum", s, str(n + k), k=str(k), core=False))
        if k >= 2:
            facts.append(make_fact("product", s, str(n * k), k=str(k), core=False))
        if k <= n:
            facts.append(make_fact("difference", s, str(n - k), k=str(k), core=False))
    return make_entity("number", s, s, facts)


@functools.cache
def build_entities() -> tuple[Entity, ...]:
    """Every entity of the general corpus, in table order."""
    return (
        tuple(country_entity(row) for row in COUNTRIES)
        + tuple(element_entity(row) for row in ELEMENTS)
        + tuple(animal_entity(row) for row in ANIMALS)
        + tuple(planet_entity(row) for row in PLANETS)
        + tuple(number_entity(n) for n in NUMBERS)
    )


def held_out_names(fraction: float) -> dict[str, list[str]]:
    """A fixed `fraction` of the names of each held-out kind, chosen by a hash of the name.

    The choice does not depend on the corpus seed, so eval results on held-out entities compare across seeds.
    """
    chosen = {}
    for kind in HELD_OUT_KINDS:
        names = [e.name for e in build_entities() if e.kind == kind]
        count = max(1, round(fraction * len(names))) if fraction > 0 else 0
        ranked = sorted(names, key=lambda name: hashlib.sha256(f"{kind}:{name}".encode()).hexdigest())
        chosen[kind] = sorted(ranked[:count])
    return chosen


def names_pattern(names) -> re.Pattern:
    """A regex that finds any of `names` as whole words, in any case."""
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE) if alternatives else re.compile(r"(?!x)x")


def canonical_document(entity: Entity) -> str:
    """The entity's core facts in table order, each in its canonical template."""
    return " ".join(f.sentences[0] for f in entity.facts if f.core)


def varied_document(entity: Entity, rng) -> str:
    """The intro fact, then a random selection of the other facts in random order and random paraphrases.

    Each other core fact is kept with probability 0.8 (at least one is), so every fact recurs in most of an
    entity's documents; extras (arithmetic with random operands) add one to three sentences.
    """
    # The hot loop of corpus generation: int(random() * n) is several times faster than randrange(n).
    uniform = rng.random
    facts, n_core = entity.facts, entity.n_core
    chosen = [f for f in facts[1:n_core] if uniform() < 0.8] or [facts[1 + int(uniform() * (n_core - 1))]]
    if n_core < len(facts):
        chosen += rng.sample(facts[n_core:], 1 + int(uniform() * 3))
    rng.shuffle(chosen)
    chosen.insert(0, facts[0])
    return " ".join([f.sentences[int(uniform() * len(f.sentences))] for f in chosen])


def summary_of(entity: Entity) -> str:
    """One sentence that summarises any document about `entity` (it only uses the intro fact, always present)."""
    intro = entity.facts[0]
    if entity.kind == "country":
        return f"The text describes {entity.mention}, a country in {intro.value}."
    if entity.kind == "element":
        return f"The text describes {entity.mention}, a chemical element that is a {intro.value}."
    if entity.kind == "animal":
        return f"The text describes {entity.mention}, which is {article(intro.value)} {intro.value}."
    if entity.kind == "planet":
        return f"The text describes {entity.mention}, the {intro.value} planet from the Sun."
    return f"The text describes the number {entity.mention}, which is {intro.value}."
