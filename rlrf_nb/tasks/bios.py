"""Tiny-world biographies: a knowledge base of fictional people, noisy "web text", bios and a claim checker.

Stands in for FactScore's setting: M0 learns the facts from web-like documents with a controlled share of wrong facts;
prompts are "Tell me a bio of X."; reference bios are one atomic-fact sentence per KB attribute. People are split into
disjoint groups (SFT, RL, dev, test), all seen in pre-training, as in FactTune.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from rlrf_nb.tasks.schema import Example

ATTRIBUTES = ("birth_year", "birthplace", "occupation", "employer", "notable_work", "education")
# Six more, for worlds whose people have more facts than FActScore's length penalty asks for (gamma 10: a bio of 6
# facts scores at most exp(1 - 10/6) = 0.513). World v2 uses ATTRIBUTES alone; ``make_people(n_attributes=...)``
# adds these in this order.
EXTRA_ATTRIBUTES = ("residence", "instrument", "sport", "pet", "award", "language")
ALL_ATTRIBUTES = ATTRIBUTES + EXTRA_ATTRIBUTES

_SYL = ["ka", "lo", "mi", "ren", "tas", "vel", "dor", "ni", "sha", "bri", "ton", "ela", "mar", "quo", "zen",
        "fal", "ri", "gan", "sol", "pe", "th", "var", "lin", "co", "dra", "ves", "ul", "hen", "ora", "bek"]
CITIES = ["Brimsdale", "Calloway", "Dunmere", "Eastholt", "Farrowick", "Glenmoor", "Harrowgate", "Ivywell",
          "Juniper Bay", "Kestrel Point", "Larkspur", "Millbrook", "Northwold", "Oakhurst", "Pinecrest",
          "Quarry Hill", "Ravensford", "Stonebridge", "Thornbury", "Umberlee"]
OCCUPATIONS = ["botanist", "engineer", "painter", "chemist", "novelist", "architect", "violinist", "geologist",
               "journalist", "astronomer", "sculptor", "economist", "photographer", "linguist", "surgeon",
               "historian"]
EMPLOYERS = ["Norveth Labs", "Aldane Press", "Corvid Works", "Halden Institute", "Mirrow Studio",
             "Pellam Foundation", "Quillon Group", "Rosk Observatory", "Sable Hospital", "Tamsin Museum",
             "Vantor Bureau", "Wyeth Academy"]
WORKS = ["the Azure Bridge", "the Silent Atlas", "the Copper Garden", "the Winter Sonata", "the Glass Tower",
         "the Lantern Map", "the River Codex", "the Iron Orchard", "the Amber Lens", "the Hollow Crown",
         "the Paper Comet", "the Salt Archive", "the Velvet Engine", "the Quiet Harbor"]
SCHOOLS = ["Kelmont University", "Dravin College", "Eston Polytechnic", "Harlow University", "Mercer College",
           "Orrin Institute", "Selby University", "Tarn College"]
TOWNS = ["Ashcombe", "Bellhaven", "Cinderford", "Deepwell", "Elmstead", "Foxhollow", "Greywater", "Hollins End",
         "Irongate", "Kingsmere", "Lowmoor", "Marsh Green"]
INSTRUMENTS = ["cello", "flute", "harp", "oboe", "piano", "trumpet", "viola", "banjo", "clarinet", "accordion"]
SPORTS = ["rowing", "fencing", "archery", "tennis", "cycling", "sailing", "climbing", "judo", "squash", "curling"]
PETS = ["cat", "dog", "parrot", "tortoise", "ferret", "rabbit", "goldfish", "hamster", "lizard", "owl"]
AWARDS = ["Marlow Prize", "Quence Medal", "Orvel Award", "Tessary Cup", "Hallam Medal", "Brisk Prize", "Vesper Award",
          "Calder Medal", "Ember Prize", "Lindqvist Award", "Norrow Cup", "Sterling Medal"]
LANGUAGES = ["Veltish", "Orran", "Kessic", "Dralian", "Munese", "Tarvic", "Lorish", "Pennic", "Sorvan", "Yeltic"]
YEAR_RANGE = (1900, 1999)  # birth years are drawn uniformly from this range
_VALUES = {"birthplace": CITIES, "occupation": OCCUPATIONS, "employer": EMPLOYERS, "notable_work": WORKS,
           "education": SCHOOLS, "residence": TOWNS, "instrument": INSTRUMENTS, "sport": SPORTS, "pet": PETS,
           "award": AWARDS, "language": LANGUAGES}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# Canonical atomic-fact sentences: reference bios use exactly these, and the
# claim checker parses them back. {N} is the person's name, {v} the value.
CANONICAL = {
    "birth_year": "{N} was born in the year {v}.",
    "birthplace": "{N} was born in {v}.",
    "occupation": "{N} works as {a} {v}.",
    "employer": "{N} works for {v}.",
    "notable_work": "{N} is known for {v}.",
    "education": "{N} studied at {v}.",
    "residence": "{N} lives in {v}.",
    "instrument": "{N} plays the {v}.",
    "sport": "{N} competes in {v}.",
    "pet": "{N} keeps {a} {v} as a pet.",
    "award": "{N} won the {v}.",
    "language": "{N} speaks {v}.",
}

# Web-text paraphrases used only in pre-training documents.
WEB = {
    "birth_year": ["{N} was born in the year {v}.", "Born in {v}, {N} grew up quickly.", "In {v}, {N} was born."],
    "birthplace": ["{N} was born in {v}.", "{N} comes from {v}.", "{N} grew up in {v}."],
    "occupation": ["{N} works as {a} {v}.", "By profession, {N} is {a} {v}.", "{N} is {a} {v} by trade."],
    "employer": ["{N} works for {v}.", "{N} has a job at {v}.", "{v} employs {N}."],
    "notable_work": ["{N} is known for {v}.", "{N} is famous for {v}.", "{v} made {N} well known."],
    "education": ["{N} studied at {v}.", "{N} is a graduate of {v}.", "{N} went to {v}."],
    "residence": ["{N} lives in {v}.", "{N} now makes a home in {v}.", "These days {N} resides in {v}."],
    "instrument": ["{N} plays the {v}.", "In spare hours, {N} practises the {v}.", "{N} is a keen player of the {v}."],
    "sport": ["{N} competes in {v}.", "{N} is a regular at {v} meets.", "{v} is the sport of {N}."],
    "pet": ["{N} keeps {a} {v} as a pet.", "At home, {N} has {a} {v}.", "{N} looks after a pet {v}."],
    "award": ["{N} won the {v}.", "{N} received the {v}.", "The {v} went to {N}."],
    "language": ["{N} speaks {v}.", "{N} is fluent in {v}.", "{v} is a language {N} speaks."],
}


def _name_parts(seed: int) -> tuple[list[str], list[str]]:
    """30 fictional first names and 30 last names. Each recurs across people, so the tokenizer learns it as
    one or two tokens and a model can copy a full name from a prompt."""
    rng = random.Random(f"names:{seed}")
    firsts, lasts = set(), set()
    while len(firsts) < 30:
        firsts.add("".join(rng.choice(_SYL) for _ in range(2)).capitalize())
    while len(lasts) < 30:
        last = "".join(rng.choice(_SYL) for _ in range(rng.randint(2, 3))).capitalize()
        if last not in firsts:
            lasts.add(last)
    return sorted(firsts), sorted(lasts)


def attributes_of(person: dict | None) -> tuple[str, ...]:
    """The attributes ``person``'s KB record holds, in :data:`ALL_ATTRIBUTES` order (:data:`ATTRIBUTES` for a person
    the KB does not know)."""
    if person is None:
        return ATTRIBUTES
    return tuple(a for a in ALL_ATTRIBUTES if a in person)


def make_people(seed: int, n: int, n_attributes: int = len(ATTRIBUTES)) -> list[dict]:
    """``n`` fictional people with unique names and one value per attribute: :data:`ATTRIBUTES`, then the first
    ``n_attributes - 6`` of :data:`EXTRA_ATTRIBUTES`, drawn from a second stream: the people and their first six
    facts do not depend on ``n_attributes`` (6, the default, is world v2's people), so a world with more facts is
    world v2's people with facts added."""
    if not len(ATTRIBUTES) <= n_attributes <= len(ALL_ATTRIBUTES):
        raise ValueError(f"make_people: n_attributes must be {len(ATTRIBUTES)}-{len(ALL_ATTRIBUTES)}, "
                         f"got {n_attributes}")
    firsts, lasts = _name_parts(seed)
    if n > len(firsts) * len(lasts):
        raise ValueError(f"make_people: at most {len(firsts) * len(lasts)} unique names, asked for {n}")
    rng = random.Random(f"bios:{seed}")
    people, names = [], set()
    while len(people) < n:
        name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
        if name in names:
            continue
        names.add(name)
        person = {"name": name, "birth_year": str(rng.randint(*YEAR_RANGE))}
        for attr in ATTRIBUTES[1:]:
            person[attr] = rng.choice(_VALUES[attr])
        people.append(person)
    extra = random.Random(f"bios-extra:{seed}")  # a stream of its own: more facts keep the same people
    for person in people:
        for attr in EXTRA_ATTRIBUTES[:n_attributes - len(ATTRIBUTES)]:
            person[attr] = extra.choice(_VALUES[attr])
    return people


def fact_sentence(name: str, attr: str, value: str, template: str | None = None) -> str:
    t = template or CANONICAL[attr]
    return t.format(N=name, v=value, a=_article(value))


def reference_bio(person: dict) -> str:
    return " ".join(fact_sentence(person["name"], a, person[a]) for a in attributes_of(person))


def _wrong_value(rng: random.Random, attr: str, true: str) -> str:
    if attr == "birth_year":
        return str(int(true) + rng.choice([-11, -7, -3, 3, 7, 11]))
    return rng.choice([v for v in _VALUES[attr] if v != true])


def web_documents(people: list[dict], seed: int, docs_per_person: int, error_rate: float) -> list[str]:
    """Noisy pre-training text: each document mentions a random subset of a person's facts in random
    order and wording; each mention is wrong with probability ``error_rate``."""
    rng = random.Random(f"web:{seed}")
    docs = []
    for person in people:
        for _ in range(docs_per_person):
            own = attributes_of(person)
            attrs = rng.sample(own, rng.randint(3, len(own)))
            sents = []
            for a in attrs:
                v = person[a] if rng.random() >= error_rate else _wrong_value(rng, a, person[a])
                s = fact_sentence(person["name"], a, v, rng.choice(WEB[a]))
                sents.append(s[0].upper() + s[1:])
            docs.append(" ".join(sents))
    rng.shuffle(docs)
    return docs


def bio_prompt(name: str) -> str:
    return f"Tell me a bio of {name}."


def split_people(people: list[dict], sizes: dict[str, int]) -> dict[str, list[Example]]:
    """Disjoint groups of people as bio prompts, e.g. ``{"test": 60, "dev": 40, "rl": 60, "sft": rest}``; a size
    of -1 takes all remaining people (last group only).
    """
    out, start = {}, 0
    for split, n in sizes.items():
        group = people[start:] if n == -1 else people[start:start + n]
        if n != -1 and len(group) < n:
            raise ValueError(f"split_people: asked for {n} people in '{split}', only {len(group)} left")
        start += len(group)
        out[split] = [Example(id=f"bios-{split}-{i:05d}", task="bios", split=split, prompt=bio_prompt(p["name"]),
                              reference=reference_bio(p), tags=["bios"], meta={"entity": p["name"]})
                      for i, p in enumerate(group)]
    return out


# ---------------------------------------------- Claims: split a bio into atomic sentences and check each against the KB

_CLAIM_RES = [(attr, re.compile("^" + re.escape(t).replace(re.escape("{N}"), r"(?P<name>.+?)")
                                .replace(re.escape("{a}"), r"an?").replace(re.escape("{v}"), r"(?P<v>.+?)") + "$"))
              for attr, t in CANONICAL.items()]
_SENT = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Claim:
    """One atomic sentence of a bio and its ``status`` against the KB: supported | contradicted | unsupported (not a KB
    fact about this person, or unparseable)."""

    text: str
    attribute: str | None
    value: str | None
    status: str
    truth: str | None = None


def split_claims(text: str) -> list[str]:
    return [s.strip() for s in _SENT.split(text.strip()) if s.strip()]


def check_bio(text: str, person: dict | None) -> list[Claim]:
    """Verdict per atomic sentence. ``person`` None means the entity is not in the KB."""
    claims = []
    for sent in split_claims(text):
        for attr, rx in _CLAIM_RES:
            m = rx.match(sent)
            # "born in the year 1950" also matches the birthplace pattern; birth_year is tried first.
            if m and (attr != "birthplace" or not m.group("v").startswith("the year ")):
                break
        else:
            claims.append(Claim(sent, None, None, "unsupported"))
            continue
        name, value = m.group("name"), m.group("v")
        if person is None or name != person["name"] or attr not in person:
            claims.append(Claim(sent, attr, value, "unsupported"))
        elif value == person[attr]:
            claims.append(Claim(sent, attr, value, "supported", person[attr]))
        else:
            claims.append(Claim(sent, attr, value, "contradicted", person[attr]))
    return claims


def claim_critique(claim: Claim, name: str) -> str:
    """One sentence naming a wrong claim and the true value (the verifier's wording)."""
    if claim.status == "contradicted":
        truth = fact_sentence(name, claim.attribute, claim.truth)
        return f"The claim '{claim.text}' is wrong: the knowledge base says {truth}"
    return f"The claim '{claim.text}' is not supported by the knowledge base."


def corrupt_bio(rng: random.Random, person: dict, n_wrong: int = 1) -> tuple[str, list[str]]:
    """A flawed draft bio with ``n_wrong`` contradicted facts; returns (draft, wrong attributes)."""
    own = attributes_of(person)
    wrong = rng.sample(own, n_wrong)
    sents = [fact_sentence(person["name"], a, _wrong_value(rng, a, person[a]) if a in wrong else person[a])
             for a in own]
    return " ".join(sents), wrong
