"""Plain-text helpers shared by every source: sentences, words, and cheap judgements about them."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# A sentence ends at . ! or ? (plus closing quotes or brackets), before a space and a capital,
# a digit or an opening quote; a blank line always ends one.
_END = re.compile(r"""[.!?]+["'\u201d\u2019)\]]*(?=\s+["'\u201c\u2018(]?[A-Z0-9])|\n\s*\n""")
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "mt", "jr", "sr", "prof", "rev", "gen", "col",
                  "capt", "lt", "sgt", "vs", "etc", "no", "fig", "e.g", "i.e", "approx"}

_FUNCTION_WORDS = set("""a an the and or but of in on at to with from by for is are was were be
been it its this that these those there here he she they we i you his her their our my your me him
them us as into over under near while after before".""".split())

# Words that point at something a camera could see: colours, materials, light, bodies, clothes,
# common objects and places, and verbs of looking, posture and motion.
VISUAL_WORDS = set("""
red orange yellow green blue purple pink brown black white grey gray golden silver dark bright pale
shiny striped spotted wooden stone glass metal brass leather wool cotton silk paper plastic
light shadow shadows sun sunlight moon moonlight lamp lantern candle fire smoke mist fog rain snow
face eyes hair beard hand hands arm arms shoulder shoulders feet legs head back smile smiled frown
coat cloak hat scarf dress shirt jacket boots shoes gloves glasses robe robes uniform
table chair chairs desk bed sofa couch bench door doors window windows wall walls floor ceiling roof
stairs room hall kitchen garden gate fence path road street bridge river lake sea beach shore boat
ship harbour harbor tree trees forest field fields grass flowers hill hills mountain sky clouds
house cottage castle tower church shop market station train car cars bus bicycle horse dog cat
bird birds cup plate bowl bottle book books box basket bag sword wand broom map letter clock
screen shelf shelves fireplace portrait painting statue crowd
looked look looking stared staring watched watching glanced gazed peered saw see seen
stood standing sat sitting knelt kneeling lay lying leaned leaning walked walking ran running
climbed climbing held holding carried carrying wore wearing waved pointed opened closed
glowing gleaming glittering sparkling shining flickering
color colour colors colours shape size tall short wide narrow round square small large huge tiny
finish fabric pattern design printed polished painted carved woven sleek bulky compact
""".split())

# Capitalised words that are not names, even in the middle of a sentence.
_NOT_NAMES = set("""I The A An And But Or Of In On At To It He She They We You His Her Their My Your
Our Its This That These Those There Here Then When What Where Who Why How Yes No Not Mr Mrs Ms Dr
Sir Madam Lady Lord Professor Captain Uncle Aunt Mum Mom Dad Oh Well OK Chapter Monday Tuesday
Wednesday Thursday Friday Saturday Sunday January February March April May June July August
September October November December God English""".split())


def words(text: str) -> list[str]:
    """Lower-case word tokens."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """The text as a duplicate detector sees it: lower case, words only."""
    return " ".join(words(text))


def split_sentences(text: str) -> list[tuple[int, str]]:
    """Sentences with their character offsets in `text`, internal whitespace collapsed."""
    return list(iter_sentences([text]))


# A run of text with no sentence end longer than this is let go as one (over-long) sentence, so a
# stream without punctuation cannot hold the whole of itself in memory.
MAX_PENDING = 1 << 20


def iter_sentences(pieces: Iterable[str], offset: int = 0) -> Iterator[tuple[int, str]]:
    """The sentences of the text `pieces` make when joined (which starts at `offset`), with their
    offsets, as `split_sentences` finds them in the joined text, but holding only the unfinished
    sentence between pieces. A sentence end is final once a non-space character follows it: its
    match, its look-ahead and every earlier match attempt have then read all they will ever read."""
    pending = ""
    for piece in pieces:
        pending += piece
        ends = _sentence_ends(pending)
        settled = len(pending.rstrip())  # an end before this has a non-space character after it
        final = [end for end in ends if end < settled]
        if not final and len(pending) > MAX_PENDING:
            final = [len(pending)]
        if final:
            yield from _sentences(pending, [0, *final], offset)
            pending, offset = pending[final[-1]:], offset + final[-1]
    yield from _sentences(pending, [0, *_sentence_ends(pending), len(pending)], offset)


def _sentence_ends(text: str) -> list[int]:
    """Where each sentence of `text` ends (abbreviations such as 'Mr.' end none)."""
    ends, start = [], 0
    for match in _END.finditer(text):
        before = text[start:match.start()].rsplit(None, 1)
        if match.group().startswith(".") and before and before[-1].lower().rstrip(".") in _ABBREVIATIONS:
            continue
        ends.append(match.end())
        start = match.end()
    return ends


def _sentences(text: str, bounds: list[int], offset: int) -> Iterator[tuple[int, str]]:
    for begin, end in zip(bounds, bounds[1:], strict=False):
        piece = text[begin:end]
        stripped = piece.strip()
        if stripped:
            yield offset + begin + piece.index(stripped[0]), " ".join(stripped.split())


def looks_like(text: str, language: str | None) -> bool:
    """A cheap sanity check that `text` is prose in `language` (only English is checked closely)."""
    chars = len("".join(text.split()))  # split() drops exactly what isspace() calls space
    if text.isascii():  # the common case, counted in C: every book sentence passes through here
        letters = ascii_letters = len(text.encode("ascii").translate(None, _NOT_ASCII_LETTERS))
    else:
        letters = sum(c.isalpha() for c in text)
        ascii_letters = sum(c.isalpha() and c.isascii() for c in text)
    if not chars or letters < 0.6 * chars:
        return False  # mostly digits, symbols or markup
    if language != "en":
        return True
    tokens = words(text)
    return ascii_letters >= 0.9 * letters and (len(tokens) < 6 or any(t in _FUNCTION_WORDS for t in tokens))


_NOT_ASCII_LETTERS = bytes(b for b in range(256) if not chr(b).isascii() or not chr(b).isalpha())


def is_visual(text: str) -> bool:
    """Whether the sentence mentions something a photo could show (a lexicon check, not a model)."""
    return not text.rstrip().endswith("?") and any(w in VISUAL_WORDS for w in words(text))


def frequent_names(sentences: Iterable[str], min_count: int = 5, limit: int = 50) -> list[str]:
    """A text's frequent names: capitalised words used at least `min_count` times that never
    appear in lower case in it (so 'The' or 'Behind' at the start of a sentence are not names).
    `sentences` may be any pieces of the text that do not split words, read once as a stream."""
    capitalised: Counter = Counter()
    lower: set[str] = set()
    for sentence in sentences:
        for token in _NAME_TOKEN.findall(sentence):
            if token[0].isupper():
                capitalised[token] += 1
            else:
                lower.add(token)
    counts = Counter({t: n for t, n in capitalised.items() if t.lower() not in lower and t not in _NOT_NAMES})
    return [name for name, n in counts.most_common(limit) if n >= min_count]


_NAME_TOKEN = re.compile(r"\b[A-Za-z][a-z]{2,}\b")


def name_pattern(names: list[str]) -> re.Pattern | None:
    """A pattern matching any of the names, or any part of a multi-word name (e.g. 'Voss')."""
    parts = {names_part for name in names for names_part in [name, *name.split()]
             if len(names_part) >= 3 and names_part not in _NOT_NAMES}
    if not parts:
        return None
    alternatives = "|".join(sorted(map(re.escape, parts), key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b")

