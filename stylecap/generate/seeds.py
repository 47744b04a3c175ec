"""The built-in seed captions: neutral, everyday scenes for a rewrite style run with no --input.

They come from a small grammar shipped as data (``corpora/everyday-scenes.json``): places, each with
the people's actions, animals and things that fit it, and sentence templates that combine them. The
expansion is deterministic (a seeded random draw), so a run and its resumption see the same seeds
under the same ids. Verbs are stored in their base form and conjugated here, so one action serves
"a man slices bread", "two friends slice bread" and "a man slicing bread".
"""
from __future__ import annotations

import functools
import json
import random
import re
from importlib import resources

GRAMMAR_FILE = "everyday-scenes.json"
_SLOT = re.compile(r"\{(\w+)\}")
_ARTICLE = re.compile(r"\b([Aa]n?) ([\w'-]+)")


@functools.cache
def grammar() -> dict:
    return json.loads((resources.files("stylecap.corpora") / GRAMMAR_FILE).read_text(encoding="utf-8"))


def seed_set_name() -> str:
    """Names the set and its grammar version in seed ids ('everyday-v1'): a changed grammar gets
    new ids, so an old corpus folder never pairs a seed id with a different caption."""
    return f"{grammar()['name']}-v{grammar()['version']}"


def builtin_seeds(count: int | None = None, seed: int | None = None) -> list[tuple[str, str]]:
    """(seed id, caption) for the grammar's default number of distinct captions (or `count`)."""
    rules = grammar()
    seed = rules["seed"] if seed is None else seed
    captions = _captions(count or rules["count"], seed)
    name = seed_set_name() + ("" if seed == rules["seed"] else f"-s{seed}")  # other draws, other ids
    return [(f"{name}:{index}", caption) for index, caption in enumerate(captions)]


@functools.cache
def _captions(count: int, seed: int) -> tuple[str, ...]:
    return tuple(_draw_distinct(grammar(), count, seed))


def _draw_distinct(rules: dict, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    captions: dict[str, None] = {}  # insertion-ordered set
    attempts = 0
    while len(captions) < count:
        attempts += 1
        if attempts > 50 * count:  # the grammar cannot make that many different captions
            raise ValueError(f"the seed grammar yields only {len(captions)} distinct captions, not {count}")
        captions.setdefault(_caption(rules, rng), None)
    return list(captions)


def _caption(rules: dict, rng: random.Random) -> str:
    place = rng.choice(rules["places"])
    templates = rules["templates"]
    template = rng.choices([t["text"] for t in templates], weights=[t["weight"] for t in templates])[0]
    slots = _Slots(rules, place, rng)
    text = _agree_articles(_SLOT.sub(lambda match: slots.fill(match.group(1)), template), rules)
    return text[0].upper() + text[1:]


class _Slots:
    """Fills one template's slots; the verb slots agree with the subject chosen for the sentence."""

    def __init__(self, rules: dict, place: dict, rng: random.Random):
        self.rules, self.place, self.rng = rules, place, rng
        self.actions: list[str] = place["anyone"]  # widened by the subject's age

    def fill(self, slot: str) -> str:
        return getattr(self, slot)()

    def at(self) -> str:
        return self.rng.choice(self.place["at"])

    def animal(self) -> str:
        return self.rng.choice(self.place["animals"])

    def thing(self) -> str:
        return self.rng.choice(self.place["things"])

    def person(self) -> str:
        people = self.rules["people"]
        age = "adults" if self.rng.random() < 0.75 else "children"
        self._actions_for(age)
        noun = self.rng.choice(people[age])
        if self.rng.random() < people["clothes_chance"]:
            clothes = self.rng.choice(people["clothes"]).replace("{colour}", self.rng.choice(people["colours"]))
            noun = f"{noun} {clothes}"
        return "a " + noun  # the article agrees with the word after it once the sentence is whole

    def group(self) -> str:
        kind = self.rng.choices(["adults", "children", "mixed"], weights=[5, 3, 2])[0]
        self._actions_for(kind)
        return self.rng.choice(self.rules["groups"][kind])

    def _actions_for(self, kind: str) -> None:
        """What this subject may do here: everyone's actions plus those of adults or of children
        (a mixed group keeps to everyone's)."""
        self.actions = self.place["anyone"] + self.place.get(kind, []) if kind != "mixed" else self.place["anyone"]

    def does(self) -> str:
        return _conjugate(self.rng.choice(self.actions), lambda verb: third_person(verb, self.rules))

    def do(self) -> str:
        return self.rng.choice(self.actions)

    def doing(self) -> str:
        return _conjugate(self.rng.choice(self.actions), lambda verb: participle(verb, self.rules))


def _conjugate(action: str, form) -> str:
    verb, _, rest = action.partition(" ")
    return f"{form(verb)} {rest}".strip()


def third_person(verb: str, rules: dict) -> str:
    """'slice' → 'slices', 'wash' → 'washes', 'carry' → 'carries', 'have' → 'has'."""
    irregular = rules["verbs"]["third_person"]
    if verb in irregular:
        return irregular[verb]
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def participle(verb: str, rules: dict) -> str:
    """'slice' → 'slicing', 'sit' → 'sitting' (doubled verbs are listed), 'lie' → 'lying'."""
    if verb in rules["verbs"]["doubled"]:
        return verb + verb[-1] + "ing"
    if verb.endswith("ie"):
        return verb[:-2] + "ying"
    if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and len(verb) > 2:
        return verb[:-1] + "ing"
    return verb + "ing"


def _agree_articles(text: str, rules: dict) -> str:
    """Every 'a'/'an' made to fit the word after it ('a orange backpack' → 'an orange backpack')."""
    def agree(match: re.Match) -> str:
        article = "an" if vowel_sound(match.group(2), rules) else "a"
        return f"{article.capitalize() if match.group(1)[0].isupper() else article} {match.group(2)}"

    return _ARTICLE.sub(agree, text)


def vowel_sound(word: str, rules: dict) -> bool:
    """Whether `word` starts with a vowel sound (by its letter, with the grammar's exceptions)."""
    word = word.lower()
    if any(word.startswith(prefix) for prefix in rules["an_before"]):
        return True
    if any(word.startswith(prefix) for prefix in rules["a_before"]):
        return False
    return word[:1] in tuple("aeiou")


def trigram_variety(captions: list[str]) -> tuple[int, float]:
    """(distinct captions, distinct word trigrams / all word trigrams): how varied a seed set is."""
    grams = [tuple(words[i:i + 3]) for caption in captions
             for words in [caption.lower().rstrip(".").replace(",", "").split()]
             for i in range(len(words) - 2)]
    return len(set(captions)), len(set(grams)) / max(1, len(grams))
