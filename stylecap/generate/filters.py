"""Which sentences enter a corpus.

Two stages. `reject_reason` judges one sentence alone (length, language, a seed copied back, the
style's visual and character rules) as it is generated. `corpus_pass` judges the whole set at the
end (exact and near duplicates, overused n-grams) in record-id order with hash-based draws, so the
same set of generated records always yields the same corpus, however the run was interrupted.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from stylecap.generate.styles import Filters
from stylecap.generate.text import is_visual, looks_like, normalize, words

# MinHash LSH: 32 hashes in 8 bands of 4. A pair at 0.7 similarity shares a band 89% of the time,
# a pair at 0.3 only 6%, so few pairs are compared in full.
_BANDS, _ROWS = 8, 4


def reject_reason(text: str, filters: Filters, *, seed: str | None = None,
                  visual: bool = False, names: re.Pattern | None = None) -> str | None:
    """Why `text` cannot enter the corpus, or None if it may. `visual` and `names` apply to
    sentences found in books, web pages and reviews, not to text written for the purpose."""
    n = len(words(text))
    if n < filters.min_words:
        return "too short"
    if n > filters.max_words:
        return "too long"
    if filters.language and not looks_like(text, filters.language):
        return "wrong language"
    if seed is not None and normalize(text) == normalize(seed):
        return "seed copied back"
    if visual and not is_visual(text):
        return "not visual"
    if names is not None and not names.search(text):
        return "no character"
    return None


def corpus_pass(records: Iterable[dict], filters: Filters) -> tuple[list[dict], Counter]:
    """The records that survive the corpus-level filters (sorted by id), and the drops by reason."""
    drops: Counter[str] = Counter()
    kept = []
    exact: set[str] = set()
    near = _NearDuplicates(filters.near_duplicate)
    for record in sorted(records, key=lambda r: r["id"]):
        key = normalize(record["text"])
        if key in exact:
            drops["exact duplicate"] += 1
        elif near.seen(key):
            drops["near duplicate"] += 1
        else:
            exact.add(key)
            kept.append(record)
    survivors = _drop_overused_ngrams(kept, filters)
    drops["overused n-grams"] += len(kept) - len(survivors)
    return survivors, +drops


class _NearDuplicates:
    """Remembers word sets; `seen` says whether a new one is at least `threshold` similar
    (Jaccard over words and word pairs) to one remembered, finding candidates by MinHash bands."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.remembered: list[frozenset] = []
        self.buckets: dict[tuple, list[int]] = defaultdict(list)

    def seen(self, normalized: str) -> bool:
        shingles = _shingles(normalized)
        if not shingles or self.threshold > 1:
            return False
        bands = _band_keys(shingles)
        candidates = {index for band in bands for index in self.buckets[band]}
        if any(_jaccard(shingles, self.remembered[i]) >= self.threshold for i in candidates):
            return True
        for band in bands:
            self.buckets[band].append(len(self.remembered))
        self.remembered.append(shingles)
        return False


def _shingles(normalized: str) -> frozenset:
    tokens = normalized.split()
    return frozenset(tokens) | frozenset(zip(tokens, tokens[1:]))


def _band_keys(shingles: frozenset) -> list[tuple]:
    import numpy as np

    hashes = np.array([_hash(repr(s)) for s in shingles], dtype=np.uint64)
    # One min-hash per mask: XOR with a random mask permutes well-mixed 64-bit hashes well enough.
    signature = (hashes[:, None] ^ _masks()[None, :]).min(axis=0).tolist()
    return [(band, *signature[band * _ROWS:(band + 1) * _ROWS]) for band in range(_BANDS)]


@functools.cache
def _masks():
    import numpy as np

    return np.array([_hash(f"mask {i}") for i in range(_BANDS * _ROWS)], dtype=np.uint64)


def _jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b)


def _hash(text: str) -> int:
    """A stable 64-bit hash (Python's own `hash` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _drop_overused_ngrams(records: list[dict], filters: Filters) -> list[dict]:
    """The paper's filter: a record built from n-grams the generator overuses is dropped with a
    probability that grows with their counts. The draw is a hash of the record id, so it repeats."""
    low, high = filters.ngram_sizes
    grams = [_ngrams(words(r["text"]), low, high) for r in records]
    counts = Counter(g for record_grams in grams for g in record_grams)
    survivors = []
    for record, record_grams in zip(records, grams):
        chance = sum(counts[g] / filters.ngram_scale for g in record_grams
                     if counts[g] >= filters.ngram_min_count)
        if _uniform(record["id"]) >= chance:
            survivors.append(record)
    return survivors


def _ngrams(tokens: list[str], low: int, high: int) -> list[tuple]:
    return [tuple(tokens[i:i + n]) for n in range(low, high + 1) for i in range(len(tokens) - n + 1)]


def _uniform(record_id: str) -> float:
    return _hash("draw:" + record_id) / 2**64
