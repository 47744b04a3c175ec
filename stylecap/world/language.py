"""Text about a scene: captions, style voices, VQA questions, entailment hypotheses, news records.

Every writer fills templates from vocab.json. A template names objects through slots A, B, C
(a full mention: "a small red circle") and the_A… (a back-reference: "the circle"); {rel} is a
relation of A to B and {rel2} of C to B. A template is used for a scene only when its slots are
exactly the scene's objects, so every caption names every object, and relations are drawn only
from those true in the scene.
"""
from __future__ import annotations

import random
import re
from dataclasses import replace
from functools import lru_cache
from typing import NamedTuple

from stylecap.world.scenes import Obj, Scene, relation_holds, relations_between, vocab

LETTERS = "ABC"
_SLOT = re.compile(r"\{(?:the_)?([ABC])\}")


class Described(NamedTuple):
    """A text and the relations it states, as (subject, relation, object) scene objects."""

    text: str
    relations: tuple[tuple[Obj, str, Obj], ...]


def _slots(template: str) -> set[str]:
    return set(_SLOT.findall(template))


@lru_cache(maxsize=None)
def _phrases(n: int) -> tuple[str, ...]:
    """The scene phrases ("{A} {rel} {B}") that name exactly ``n`` objects."""
    return tuple(p for p in vocab()["captions"]["phrases"] if _slots(p) == set(LETTERS[:n]))


@lru_cache(maxsize=None)
def _templates(n: int) -> tuple[str, ...]:
    """The neutral caption templates that name exactly ``n`` objects."""
    return tuple(t for t in vocab()["captions"]["templates"]
                 if (_phrases(n) if "{phrase}" in t else _slots(t) == set(LETTERS[:n])))


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def mention(obj: Obj, rng: random.Random, with_size: bool = True) -> str:
    """A full indefinite mention: "a small red circle" (size optional for questions)."""
    v = vocab()
    words = [rng.choice(v["colours"][obj.colour]["words"]), rng.choice(v["shapes"][obj.shape])]
    if with_size:
        words.insert(0, rng.choice(v["sizes"][obj.size]["words"]))
    return _article(" ".join(words))


def short_ref(obj: Obj, rng: random.Random) -> str:
    """A definite back-reference to an object already named: "the circle", "the red circle"."""
    v = vocab()
    shape = rng.choice(v["shapes"][obj.shape])
    if rng.random() < 0.5:
        return f"the {shape}"
    return f"the {rng.choice(v['colours'][obj.colour]['words'])} {shape}"


def _relation_words(a: Obj, b: Obj, rng: random.Random) -> tuple[str, str]:
    rel = rng.choice(relations_between(a, b))
    return rel, rng.choice(vocab()["relations"][rel])


def describe(template: str, scene: Scene, rng: random.Random) -> Described:
    """Fill one template (which may hold {phrase}) with the scene's objects in a random order."""
    n = len(scene.objects)
    if "{phrase}" in template:
        template = template.replace("{phrase}", rng.choice(_phrases(n)))
    objs = dict(zip(LETTERS, rng.sample(scene.objects, n), strict=False))  # the first n letters
    values = {letter: mention(obj, rng) for letter, obj in objs.items()}
    for letter, obj in objs.items():
        if "{the_" + letter + "}" in template:
            values["the_" + letter] = short_ref(obj, rng)
    if "{bg}" in template:
        values["bg"] = rng.choice(vocab()["backgrounds"][scene.background]["words"])
    stated = []
    for slot, subject in (("rel", "A"), ("rel2", "C")):
        if "{" + slot + "}" in template:
            rel, values[slot] = _relation_words(objs[subject], objs["B"], rng)
            stated.append((objs[subject], rel, objs["B"]))
    return Described(_sentence_case(template.format(**values)), tuple(stated))


def _sentence_case(text: str) -> str:
    return text[0].upper() + text[1:]


def captions(scene: Scene, rng: random.Random, n: int = 5) -> list[Described]:
    """``n`` distinct neutral captions, each naming every object."""
    templates = _templates(len(scene.objects))
    return _distinct(lambda: describe(rng.choice(templates), scene, rng), n)


def _distinct(draw, n: int, tries: int = 50) -> list:
    """Up to ``n`` results of ``draw()`` with distinct first fields (texts), in draw order."""
    seen: dict[str, object] = {}
    for _ in range(tries):
        item = draw()
        seen.setdefault(item[0], item)
        if len(seen) == n:
            break
    return list(seen.values())


def voice_caption(scene: Scene, voice: str, rng: random.Random) -> Described:
    """The scene in a style voice ("I see a small red circle…", "Mira spots a small red circle and
    grins.", "Rated 4/5: …"), still naming every object."""
    spec = vocab()["voices"][voice]
    return describe(_voice_slots(rng.choice(spec["templates"]), spec, scene, rng), scene, rng)


def _voice_slots(template: str, spec: dict, scene: Scene, rng: random.Random) -> str:
    """Fill a voice's own slots: the character's {name}; a review's {rating} (2 + the number of
    objects, so the opinion follows what the picture holds) and an {opinion} that fits it. Only a
    slot the template holds draws from ``rng``, so voices without these slots write the same texts
    as before they existed."""
    if "{name}" in template:
        template = template.replace("{name}", rng.choice(spec["names"]))
    if "{rating}" in template:
        rating = str(2 + len(scene.objects))
        template = template.replace("{rating}", rating).replace("{opinion}", rng.choice(spec["opinions"][rating]))
    return template


def questions(scene: Scene, rng: random.Random, n: int = 5) -> list[tuple[str, str, str]]:
    """Up to ``n`` distinct VQA (question, answer, template kind) triples with exact answers."""
    askers = [_ask_colour, _ask_shape, _ask_size, _ask_count, _ask_count_size, _ask_exists]
    if len(scene.objects) > 1:
        askers += [_ask_relation, _ask_where]
    return _distinct(lambda: rng.choice(askers)(scene, rng), n)


def _q(kind: str, **values) -> str:
    return vocab()["vqa"][kind].format(**values)


def _name(obj: Obj) -> str:
    return f"{obj.colour} {obj.shape}"


def _ask_colour(scene, rng):
    obj = rng.choice(scene.objects)
    return _q("colour", shape=obj.shape), obj.colour, "colour"


def _ask_shape(scene, rng):
    obj = rng.choice(scene.objects)
    return _q("shape", colour=obj.colour), obj.shape, "shape"


def _ask_size(scene, rng):
    obj = rng.choice(scene.objects)
    return _q("size", colour=obj.colour, shape=obj.shape), obj.size, "size"


def _ask_count(scene, rng):
    return _q("count"), str(len(scene.objects)), "count"


def _ask_count_size(scene, rng):
    size = rng.choice(list(vocab()["sizes"]))
    return _q("count_size", size=size), str(sum(o.size == size for o in scene.objects)), "count_size"


def _ask_exists(scene, rng):
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        return _q("exists", obj=_article(_name(obj))), "yes", "exists"
    present = {(o.colour, o.shape) for o in scene.objects}
    v = vocab()
    absent = [(c, s) for c in v["colours"] for s in v["shapes"] if (c, s) not in present]
    colour, shape = rng.choice(absent)
    return _q("exists", obj=_article(f"{colour} {shape}")), "no", "exists"


def _ask_relation(scene, rng):
    a, b = rng.sample(scene.objects, 2)
    rel = rng.choice(list(vocab()["relations"]))
    answer = "yes" if relation_holds(a, rel, b) else "no"
    return _q("relation_yn", A=_name(a), rel=vocab()["relations"][rel][0], B=_name(b)), answer, "relation_yn"


def _ask_where(scene, rng):
    # Only pairs in one row or column: there "where" has a single right answer.
    pairs = [(a, b) for a in scene.objects for b in scene.objects
             if a is not b and len(relations_between(a, b)) == 1]
    if not pairs:
        return _ask_relation(scene, rng)
    a, b = rng.choice(pairs)
    return _q("where", A=_name(a), B=_name(b)), relations_between(a, b)[0], "where"


LABELS = ("entailment", "neutral", "contradiction")


def hypotheses(scene: Scene, premise: Described, rng: random.Random) -> list[tuple[str, str]]:
    """One (hypothesis, label) per label, judged against the premise caption and the scene.

    The entailment and the contradiction are the true and the false version of one kind of claim
    (an attribute, an object's presence, a relation, the count), so a hypothesis alone does not
    tell which it is: the premise, or the image, must be read. Claims only touch what the premise
    states, so the label is the same whether the premise is the caption or the image.
    """
    e = vocab()["entailment"]
    kinds = [kind for kind, ok in (("attribute", True), ("exists", True), ("relation", bool(premise.relations)),
                                   ("count", len(scene.objects) > 1)) if ok]
    kind = rng.choice(kinds)
    true, false = _CLAIMS[kind](scene, premise, rng)
    neutral = ("neutral", {"shape": rng.choice(scene.objects).shape})
    chosen = {"entailment": (kind, true), "neutral": neutral, "contradiction": (kind, false)}
    return [(_sentence_case(rng.choice(e[template]).format(**values)), label)
            for label, (template, values) in chosen.items()]


def _attribute_claims(scene: Scene, premise: Described, rng: random.Random) -> tuple[dict, dict]:
    """An object's colour or size, right and wrong (shapes are unique within a scene)."""
    obj, attribute = rng.choice(scene.objects), rng.choice(("colour", "size"))
    wrong = rng.choice([k for k in vocab()[attribute + "s"] if k != getattr(obj, attribute)])
    return {"shape": obj.shape, "value": getattr(obj, attribute)}, {"shape": obj.shape, "value": wrong}


def _exists_claims(scene: Scene, premise: Described, rng: random.Random) -> tuple[dict, dict]:
    """An object of the scene, and one whose shape the scene does not hold."""
    present = rng.choice(scene.objects)
    absent = replace(present, shape=rng.choice([k for k in vocab()["shapes"]
                                                if k not in {o.shape for o in scene.objects}]))
    return {"obj": mention(present, rng)}, {"obj": mention(absent, rng)}


def _relation_claims(scene: Scene, premise: Described, rng: random.Random) -> tuple[dict, dict]:
    """A relation the premise states, and its inverse."""
    a, rel, b = rng.choice(premise.relations)
    words = vocab()["relations"]
    return ({"A": _name(a), "rel": rng.choice(words[rel]), "B": _name(b)},
            {"A": _name(a), "rel": rng.choice(words[vocab()["inverse_relation"][rel]]), "B": _name(b)})


def _count_claims(scene: Scene, premise: Described, rng: random.Random) -> tuple[dict, dict]:
    """The number of objects (two or three), and the other of the two."""
    numbers, n = vocab()["numbers"], len(scene.objects)
    return {"n": numbers[n]}, {"n": numbers[5 - n]}


_CLAIMS = {"attribute": _attribute_claims, "exists": _exists_claims, "relation": _relation_claims,
           "count": _count_claims}


def news(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A Visual-News-style (article, caption): the article names an invented event and place;
    the caption says what the picture shows at that event."""
    nv = vocab()["news"]
    names = {"event": rng.choice(nv["event_kinds"]).format(Name=_invented_name(rng)),
             "place": rng.choice(nv["place_kinds"]).format(Name=_invented_name(rng)),
             "day": rng.choice(nv["days"])}
    article = " ".join(sentence.format(**names) for sentence in nv["article"])
    template = rng.choice(nv["captions"]).replace("{event}", names["event"]).replace(
        "{place}", names["place"]).replace("{day}", names["day"])
    return article, describe(template, scene, rng).text


def _invented_name(rng: random.Random) -> str:
    syllables = vocab()["news"]["syllables"]
    return "".join(rng.choice(syllables) for _ in range(rng.randint(2, 3))).capitalize()
