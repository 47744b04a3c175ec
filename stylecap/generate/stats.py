"""`stylecap corpus stats`: what a corpus folder holds."""
from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from stylecap.generate.store import iter_corpus_records
from stylecap.generate.text import normalize, words


def corpus_stats(folder: str | Path, top: int = 10) -> dict:
    """Counts, lengths, top n-grams, duplicate rate and sources of the corpus in `folder`."""
    records = list(iter_corpus_records(folder))
    lengths = sorted(len(words(r["text"])) for r in records)
    unique = len({normalize(r["text"]) for r in records})
    grams: dict[int, Counter] = {n: Counter() for n in (2, 3, 4)}
    for record in records:
        tokens = words(record["text"])
        for n, counter in grams.items():
            counter.update(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    manifest = Path(folder) / "manifest.json"
    return {
        "folder": str(folder),
        "records": len(records),
        "styles": dict(Counter(r.get("style", "?") for r in records)),
        "sources": dict(Counter(r.get("source", "?") for r in records)),
        "words": _length_summary(lengths),
        "duplicate_rate": round(1 - unique / len(records), 4) if records else 0.0,
        "top_ngrams": {f"{n}-grams": counter.most_common(top) for n, counter in grams.items()},
        "manifest": json.loads(manifest.read_text()) if manifest.exists() else None,
    }


def _length_summary(lengths: list[int]) -> dict:
    if not lengths:
        return {}
    return {"min": lengths[0], "median": statistics.median(lengths),
            "mean": round(statistics.fmean(lengths), 2),
            "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))], "max": lengths[-1]}
