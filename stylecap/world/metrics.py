"""Scoring generated text against known scenes: a caption parser, caption metrics, voice checks.

The parser reads captions back into objects (size, colour, shape; None where a caption leaves one
out) and relations, using the vocabulary the writers use, so it follows their synonyms, style
voices and back-references ("…; the circle is left of the star").
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from stylecap.errors import InputError, UsageError
from stylecap.world.scenes import Scene, relation_holds, vocab

ATTRIBUTES = ("size", "colour", "shape")  # the order of a parsed object's fields
_TOKEN = re.compile(r"[a-z0-9'-]+|[.!?;:]")
_SENTENCE_END = {".", "!", "?", ";", ":"}

ParsedObject = tuple  # (size, colour, shape), each a canonical word or None


@dataclass
class ParsedCaption:
    objects: list[ParsedObject] = field(default_factory=list)
    relations: list[tuple[int, str, int]] = field(default_factory=list)  # (subject, relation, object)


@lru_cache(maxsize=1)
def _lexicon() -> dict[tuple[str, ...], tuple[str, str]]:
    """Every phrase the writers use for an attribute or relation → (kind, canonical word)."""
    v = vocab()
    entries = {}
    for shape, words in v["shapes"].items():
        entries.update({w: ("shape", shape) for w in words})
    for kind in ("colour", "size"):
        for name, spec in v[kind + "s"].items():
            entries.update({w: (kind, name) for w in spec["words"]})
    for rel, phrases in v["relations"].items():
        entries.update({p: ("relation", rel) for p in phrases})
    return {tuple(_TOKEN.findall(phrase)): value for phrase, value in entries.items()}


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) items: attribute words, relation phrases, "the", sentence ends; longest match."""
    lexicon = _lexicon()
    longest = max(len(k) for k in lexicon)
    words = _TOKEN.findall(text.lower())
    items, i = [], 0
    while i < len(words):
        for length in range(min(longest, len(words) - i), 0, -1):
            hit = lexicon.get(tuple(words[i:i + length]))
            if hit:
                items.append(hit)
                i += length
                break
        else:
            word = words[i]
            items.append(("end", word) if word in _SENTENCE_END else ("the", word) if word == "the"
                         else ("other", word))
            i += 1
    return items


def parse_caption(text: str) -> ParsedCaption:
    """Objects and relations a caption states.

    A mention is a run of size/colour words ending in a shape word. A definite mention ("the
    circle") that agrees with an object named earlier refers back to it. A relation links the
    mention just before it to the one just after; a relation opening its sentence ("to the left of
    a star there is a circle") links the two mentions that follow it, the second as subject.
    """
    parsed = ParsedCaption()
    sentence: list = []  # this sentence's mentions (object indices) and relations, in order
    modifiers: dict[str, str] = {}
    definite = False
    for kind, value in _tokens(text):
        if kind in ("size", "colour"):
            modifiers[kind] = value
            continue
        if kind == "shape":
            sentence.append(_resolve(parsed, (modifiers.get("size"), modifiers.get("colour"), value), definite))
        elif kind == "relation":
            sentence.append(("rel", value))
        elif kind == "end":
            _link(parsed, sentence)
            sentence = []
        modifiers, definite = {}, kind == "the"
    _link(parsed, sentence)
    return parsed


def _resolve(parsed: ParsedCaption, obj: ParsedObject, definite: bool) -> int:
    if definite:
        for index, earlier in enumerate(parsed.objects):
            if all(mine is None or mine == theirs for mine, theirs in zip(obj, earlier, strict=True)):
                return index
    parsed.objects.append(obj)
    return len(parsed.objects) - 1


def _link(parsed: ParsedCaption, sentence: list) -> None:
    for k, item in enumerate(sentence):
        if not isinstance(item, tuple):
            continue
        after = [m for m in sentence[k + 1:] if isinstance(m, int)]
        before = sentence[k - 1] if k else None
        if isinstance(before, int) and after:
            parsed.relations.append((before, item[1], after[0]))
        elif k == 0 and len(after) >= 2:
            parsed.relations.append((after[1], item[1], after[0]))


def score_captions(preds: dict, scenes: dict[int, Scene], voice: str | None = None) -> dict:
    """Object F1 (micro, over exact (size, colour, shape) triples), exact-scene match (same objects
    and every stated relation true), relation accuracy (stated relations true in the scene; None
    when no caption states one); with ``voice``, the share of captions in that voice."""
    tp = fp = fn = exact = right = stated = 0
    for image_id, text in preds.items():
        scene = scenes.get(int(image_id))
        if scene is None:
            raise InputError(f"no scene for image id {image_id}", "predictions",
                             "score predictions against the world they were made for")
        parsed = parse_caption(text)
        truth = Counter(o.key for o in scene.objects)
        guessed = Counter(parsed.objects)
        hits = sum((truth & guessed).values())
        tp, fp, fn = tp + hits, fp + sum(guessed.values()) - hits, fn + sum(truth.values()) - hits
        correct = _correct_relations(parsed, scene)
        right, stated = right + correct, stated + len(parsed.relations)
        exact += guessed == truth and correct == len(parsed.relations)
    n = len(preds)
    scores = {
        "object_f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "exact_match": exact / n if n else 0.0,
        "relation_accuracy": right / stated if stated else None,
        "relations_stated": stated,
        "captions": n,
    }
    if voice is not None:
        scores["in_voice"] = sum(is_in_voice(t, voice) for t in preds.values()) / n if n else 0.0
    return scores


def _correct_relations(parsed: ParsedCaption, scene: Scene) -> int:
    """How many stated relations hold between the scene objects their mentions name exactly."""
    by_key = {o.key: o for o in scene.objects}
    return sum(a in by_key and b in by_key and relation_holds(by_key[a], rel, by_key[b])
               for a, rel, b in ((parsed.objects[i], rel, parsed.objects[j]) for i, rel, j in parsed.relations))


def is_in_voice(text: str, voice: str) -> bool:
    """Does ``text`` speak in ``voice``? Each voice names its check in vocab.json: ``markers`` (one
    of its marker words), ``character`` (a named character, then in the same sentence one of the
    voice's verbs of seeing, doing or feeling) or ``rating`` (a rating "N/5" or "N out of 5" and an
    opinion word). Neutral captions pass no voice's check."""
    voices = vocab()["voices"]
    if voice not in voices:
        raise UsageError(f"unknown voice {voice!r}", None, f"choose one of: {', '.join(voices)}")
    spec = voices[voice]
    return _VOICE_CHECKS[spec.get("check", "markers")](text.lower(), spec)


def _has_marker(text: str, spec: dict) -> bool:
    return not set(spec["markers"]).isdisjoint(_TOKEN.findall(text))


def _character_acts(text: str, spec: dict) -> bool:
    """A character's name as a word, followed in its sentence by one of the voice's verbs."""
    names, verbs = {n.lower() for n in spec["names"]}, set(spec["verbs"])
    named = False
    for word in _TOKEN.findall(text):
        if word in _SENTENCE_END:
            named = False
        elif word in names:
            named = True
        elif named and word in verbs:
            return True
    return False


_RATING = re.compile(r"(?<![\w.])[1-5]\s*(?:/\s*5|out of 5)(?![\w/])")


def _rated_opinion(text: str, spec: dict) -> bool:
    return bool(_RATING.search(text)) and _has_marker(text, spec)


_VOICE_CHECKS = {"markers": _has_marker, "character": _character_acts, "rating": _rated_opinion}
