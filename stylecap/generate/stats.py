"""`stylecap corpus stats`: what a corpus folder holds, read as a stream (two passes), so a corpus
of any size is described in bounded memory: lengths as a histogram, duplicates by 8-byte hashes,
top n-grams found by Misra–Gries summaries and then counted exactly."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from stylecap.generate.store import iter_corpus_records
from stylecap.generate.text import words

NGRAM_SIZES = (2, 3, 4)
# Counters each n-gram summary keeps: every n-gram more frequent than 1 in 50,000 of all n-grams
# is sure to be among the candidates, which the second pass then counts exactly.
SUMMARY_CAPACITY = 50_000


def corpus_stats(folder: str | Path, top: int = 10) -> dict:
    """Counts, lengths, top n-grams, duplicate rate and sources of the corpus in `folder`."""
    lengths: Counter[int] = Counter()
    styles: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    digests: list[bytes] = []
    summaries = {n: _FrequentItems(SUMMARY_CAPACITY) for n in NGRAM_SIZES}
    for record in iter_corpus_records(folder):
        tokens = words(record["text"])
        lengths[len(tokens)] += 1
        styles[record.get("style", "?")] += 1
        sources[record.get("source", "?")] += 1
        digests.append(hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest())
        for n, summary in summaries.items():
            summary.update(_ngrams(tokens, n))
    records = sum(lengths.values())
    unique = len(np.unique(np.frombuffer(b"".join(digests), np.uint64))) if digests else 0
    manifest = Path(folder) / "manifest.json"
    return {
        "folder": str(folder),
        "records": records,
        "styles": dict(styles),
        "sources": dict(sources),
        "words": _length_summary(lengths),
        "duplicate_rate": round(1 - unique / records, 4) if records else 0.0,
        "top_ngrams": _top_ngrams(folder, summaries, top),
        "manifest": json.loads(manifest.read_text()) if manifest.exists() else None,
    }


def _ngrams(tokens: list[str], n: int) -> Iterable[str]:
    return (" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class _FrequentItems:
    """Misra–Gries summary: at most `capacity` counters. When a new item finds no free counter,
    every counter drops by one (the empty ones go); that happens at most once per `capacity`
    items seen, so the cost per item stays constant."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.counts: dict[str, int] = {}

    def update(self, items: Iterable[str]) -> None:
        counts = self.counts
        for item in items:
            if item in counts:
                counts[item] += 1
            elif len(counts) < self.capacity:
                counts[item] = 1
            else:
                self.counts = counts = {key: value - 1 for key, value in counts.items() if value > 1}


def _top_ngrams(folder: str | Path, summaries: dict[int, _FrequentItems], top: int) -> dict:
    """The `top` n-grams of each size with their exact counts: a second pass counts the
    summaries' candidates only."""
    exact = {n: Counter(dict.fromkeys(summary.counts, 0)) for n, summary in summaries.items()}
    if any(exact.values()):
        for record in iter_corpus_records(folder):
            tokens = words(record["text"])
            for n, counts in exact.items():
                for gram in _ngrams(tokens, n):
                    if gram in counts:
                        counts[gram] += 1
    return {f"{n}-grams": [[gram, count] for gram, count in counts.most_common(top)] for n, counts in exact.items()}


def _length_summary(lengths: Counter[int]) -> dict:
    """Min, median, mean, 95th percentile and max of a histogram of lengths."""
    if not lengths:
        return {}
    total = sum(lengths.values())
    ordered = sorted(lengths.items())
    return {"min": ordered[0][0], "median": _median(ordered, total),
            "mean": round(sum(length * n for length, n in ordered) / total, 2),
            "p95": _at_rank(ordered, min(total - 1, int(0.95 * total))), "max": ordered[-1][0]}


def _at_rank(ordered: list[tuple[int, int]], rank: int) -> int:
    """The value at 0-based `rank` in the sorted list the histogram stands for."""
    seen = 0
    for value, count in ordered:
        seen += count
        if rank < seen:
            return value
    return ordered[-1][0]


def _median(ordered: list[tuple[int, int]], total: int) -> float | int:
    middle = total // 2
    if total % 2:
        return _at_rank(ordered, middle)
    return (_at_rank(ordered, middle - 1) + _at_rank(ordered, middle)) / 2
