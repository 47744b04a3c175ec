"""Which sentences enter a corpus.

Two stages. `reject_reason` judges one sentence alone (length, language, a seed copied back, the
style's visual and character rules) as it is generated. The corpus-level filters (exact and near
duplicates, overused n-grams) judge each record against the records judged before it: a
`CorpusFilter` remembers what they need in a few dozen bytes per record and judges a stream batch by
batch, in time linear in its length. Its verdicts do not depend on where the stream was cut into
batches, so a pass stopped and resumed from its saved state (see `judge.py`) gives the verdicts of a
pass that never stopped. `corpus_pass` runs it over a set of records in id order.

Near duplicates are found with MinHash LSH written here on numpy rather than with `datasketch`:
on 100k varied sentences on two cores, datasketch 2.0 (`MinHash.bulk` + `MinHashLSH`, 32
permutations) took 107 µs and about 2.6 KB of memory per record (so some 2.6 GB at 1M records), its
buckets keep every key (a repetitive corpus makes every query return a growing candidate set: the
quadratic blow-up this replaces), and its in-memory index can be saved only by pickling it, which
stylecap never reads back. Here a batch is hashed in a few numpy calls, a band value remembers at
most `_BUCKET` records, and the state is plain arrays saved as they grow.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

from stylecap.generate.styles import Filters
from stylecap.generate.text import is_visual, looks_like, normalize, words

DROP_EXACT, DROP_NEAR, DROP_NGRAMS = "exact duplicate", "near duplicate", "overused n-grams"
BATCH = 8192  # records judged per numpy step

# MinHash LSH: 32 hashes in 8 bands of 4. A pair at 0.7 similarity shares a band 89% of the time,
# a pair at 0.3 only 6%. A band value remembers the first `_BUCKET` records that had it, so a record
# meets at most 8 × 4 earlier ones, however repetitive the corpus; of those, the `_COMPARED` that
# share the most min-hashes with it (and enough of them, see `_agreement_cut`) are compared in full.
_BANDS, _ROWS, _BUCKET = 8, 4, 4
_COMPARED = 8
# N-gram counts live in a count-min sketch (4 rows of 4M counters, 64 MB): an estimate exceeds
# the true count only through collisions. Measured on 200,000 generated sentences (7.2M distinct
# n-grams): exact at the median, 3 over at the 99th percentile, 13 at worst, while an n-gram counts
# as overused there only from 500 sightings (a 0.25% share); collisions grow with the corpus, and
# so does that bar.
_SKETCH_ROWS, _SKETCH_BITS = 4, 22
SKETCH_SHAPE = (_SKETCH_ROWS, 1 << _SKETCH_BITS)
_TOKEN_MEMO = 1 << 20  # distinct words whose hashes are remembered (a corpus repeats its words)


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
    """The records that survive the corpus-level filters and the drops by reason. Records are judged
    in id order, so the same set of records always gives the same corpus (the first id wins)."""
    judge = CorpusFilter(filters)
    ordered = sorted(records, key=lambda r: r["id"])
    kept, drops = [], Counter()
    for start in range(0, len(ordered), BATCH):
        batch = ordered[start:start + BATCH]
        for record, verdict in zip(batch, judge.judge(batch), strict=True):
            if verdict is None:
                kept.append(record)
            else:
                drops[verdict] += 1
    return kept, drops


class CorpusFilter:
    """The corpus-level filters over a stream of records. It remembers every record that was not a
    duplicate: its exact key, up to 8 band values, its hashed words and word pairs (for the full
    comparison) and its n-grams in the count sketch. With `log=True` it also keeps what it added
    since the last `take_log()`, so a caller can save the state as it grows (`judge.py`)."""

    def __init__(self, filters: Filters, *, log: bool = False):
        self.filters = filters
        self.exact = _SortedIndex()
        self.bands = _SortedIndex()
        self.shingles = _Growing(np.uint32)  # each remembered record's shingle hashes, one after another
        self.ends = _Growing(np.int64)  # where each remembered record's shingles end
        self.signatures = _Growing(np.uint8)  # the low byte of each remembered record's 32 min-hashes
        self.sketch = np.zeros(SKETCH_SHAPE, np.uint32)
        self._tokens = _TokenHashes()
        self._log: dict[str, list[np.ndarray]] | None = {name: [] for name in LOGGED} if log else None

    @property
    def remembered(self) -> int:
        """Records that passed the duplicate filters so far: the corpus size the n-gram shares use."""
        return len(self.ends)

    def judge(self, records: list[dict]) -> list[str | None]:
        """Each record's fate, in order: None (kept) or why it is dropped. A record is judged
        against every record judged before it, in this call or an earlier one."""
        if len(records) > BATCH:  # the sketch's sort keys have room for BATCH records
            return [verdict for start in range(0, len(records), BATCH)
                    for verdict in self.judge(records[start:start + BATCH])]
        tokens = [words(record["text"]) for record in records]
        batch = _Batch.of(tokens, self._tokens)
        verdicts, remembered = self._deduplicate(batch)
        if remembered:
            overused = self._overused(batch, remembered, [records[i]["id"] for i in remembered])
            for i, drop in zip(remembered, overused.tolist(), strict=True):
                if drop:
                    verdicts[i] = DROP_NGRAMS
        return verdicts

    # -- exact and near duplicates -------------------------------------------------------------

    def _deduplicate(self, batch: "_Batch") -> tuple[list[str | None], list[int]]:
        """Verdicts of the duplicate filters, and the records that passed them (in order). Earlier
        batches are looked up in numpy at once; this batch's own records through a small dict,
        which only band values that come up again within the batch need to enter."""
        near = self.filters.near_duplicate <= 1
        duplicates = self.exact.count(batch.exact) > 0
        known_exact, exact = duplicates.tolist(), batch.exact.tolist()
        if near:
            bands, signatures = batch.minhashes()
            earlier, stored = self._earlier_candidates(bands, signatures, ~duplicates)
        else:
            bands, signatures, earlier = np.zeros((batch.size, 0), np.uint64), None, {}
            stored = np.zeros(bands.shape, np.int64)
        _, inverse, counts = np.unique(bands.ravel(), return_inverse=True, return_counts=True)
        recurring = (counts[inverse] > 1).reshape(bands.shape)
        shared = [[band for band, again in enumerate(row) if again] for row in recurring.tolist()]
        band_rows, stored_rows = bands.tolist(), stored.tolist()
        rows = [row.tobytes() for row in signatures] if near else []
        offsets = batch.offsets.tolist()
        cut = self._agreement_cut()

        verdicts: list[str | None] = []
        remembered: list[int] = []
        seen_exact: set[int] = set()
        fresh: dict[int, list[int]] = {}  # band value -> this batch's remembered records that have it
        fresh_rows: dict[int, int] = {}  # number -> its row in the batch
        new_keys: list[int] = []
        new_numbers: list[int] = []
        number = self.remembered
        for i in range(batch.size):
            if known_exact[i] or exact[i] in seen_exact:
                verdicts.append(DROP_EXACT)
                continue
            if near and offsets[i + 1] > offsets[i]:
                keys = band_rows[i]
                alike = {n for band in shared[i] for n in fresh.get(keys[band], ())}
                candidates = earlier.get(i, [])
                candidates += [(-agreement, n) for n in alike
                               if (agreement := _agreement(rows[i], rows[fresh_rows[n]])) >= cut]
                if candidates and self._near_any(batch, i, candidates, fresh_rows):
                    verdicts.append(DROP_NEAR)
                    continue
                for band in shared[i]:
                    members = fresh.setdefault(keys[band], [])
                    if stored_rows[i][band] + len(members) < _BUCKET:
                        members.append(number)
                        new_keys.append(keys[band])
                        new_numbers.append(number)
                fresh_rows[number] = i
            verdicts.append(None)
            remembered.append(i)
            seen_exact.add(exact[i])
            number += 1
        # A band value met once in this batch goes to the index if its bucket has room.
        numbers = np.full(batch.size, -1, np.int64)
        numbers[remembered] = np.arange(self.remembered, number)
        filled = (numbers >= 0) & (np.diff(batch.offsets) > 0)
        rows_, columns = np.nonzero(filled[:, None] & ~recurring & (stored < _BUCKET))
        keys = np.concatenate([np.array(new_keys, np.uint64), bands[rows_, columns]])
        owners = np.concatenate([np.array(new_numbers, np.int64), numbers[rows_]]).astype(np.int32)
        self._remember(batch, remembered, signatures, keys, owners)
        return verdicts, remembered

    def _agreement_cut(self) -> int:
        """Min-hashes (of 32) two records must share before their shingles are compared in full.
        A pair at the threshold t shares 32·t on average; at 32·(t − 0.25), a pair at t = 0.7
        falls short once in a thousand (binomial tail; the LSH bands themselves miss 11% there),
        while most pairs that merely share a band (similarity 0.2–0.4) are skipped unread."""
        return max(0, int(np.ceil((self.filters.near_duplicate - 0.25) * _BANDS * _ROWS)))

    def _earlier_candidates(self, bands: np.ndarray, signatures: np.ndarray,
                            wanted: np.ndarray) -> tuple[dict[int, list[tuple[int, int]]], np.ndarray]:
        """For each `wanted` record of the batch, the remembered records of earlier batches that
        share a band and enough min-hashes with it, as (−min-hashes shared, number), the
        `_COMPARED` likeliest only; and how many records each band value already holds."""
        rows = np.flatnonzero(wanted)
        queries, numbers, stored = self.bands.matches(bands[rows].ravel())
        records = rows[queries // _BANDS]
        pairs = np.unique(records.astype(np.int64) << 32 | numbers.astype(np.int64))
        records, numbers = pairs >> 32, pairs & 0xFFFFFFFF
        kept = self.signatures.data.reshape(-1, _BANDS * _ROWS)
        shared = (signatures[records] == kept[numbers]).sum(axis=1)
        close = shared >= self._agreement_cut()
        records, shared, numbers = records[close], shared[close], numbers[close]
        order = np.lexsort((numbers, -shared, records))  # by record; likeliest (then oldest) first
        records, shared, numbers = records[order], shared[order], numbers[order]
        starts = np.searchsorted(records, records, "left")
        first = np.arange(len(records)) - starts < _COMPARED
        candidates: dict[int, list[tuple[int, int]]] = {}
        for record, agreement, number in zip(records[first].tolist(), shared[first].tolist(),
                                             numbers[first].tolist(), strict=True):
            candidates.setdefault(record, []).append((-agreement, number))
        counts = np.zeros(bands.shape, np.int64)
        counts[rows] = stored.reshape(len(rows), _BANDS)
        return candidates, counts

    def _near_any(self, batch: "_Batch", i: int, candidates: list[tuple[int, int]],
                  fresh_rows: dict[int, int]) -> bool:
        """Whether record `i` of the batch is at least `near_duplicate` similar (Jaccard over its
        words and word pairs) to one of the `_COMPARED` likeliest candidates, given as
        (−min-hashes shared, number); numbers in `fresh_rows` are rows of this batch. The order
        and the cut depend on the candidates alone, never on where batches begin."""
        mine = set(batch.shingles32[batch.offsets[i]:batch.offsets[i + 1]].tolist())
        ends, shingles = self.ends.data, self.shingles.data
        for _, number in sorted(candidates)[:_COMPARED]:
            if number in fresh_rows:
                row = fresh_rows[number]
                theirs = batch.shingles32[batch.offsets[row]:batch.offsets[row + 1]]
            else:
                theirs = shingles[(ends[number - 1] if number else 0):ends[number]]
            theirs = set(theirs.tolist())
            if len(mine & theirs) >= self.filters.near_duplicate * len(mine | theirs):
                return True
        return False

    def _remember(self, batch: "_Batch", remembered: list[int], signatures: np.ndarray | None,
                  keys: np.ndarray, values: np.ndarray) -> None:
        chosen = np.zeros(batch.size, bool)
        chosen[remembered] = True
        shingles = batch.shingles32[chosen[batch.owners]]
        sizes = np.diff(batch.offsets)[remembered]
        base = int(self.ends.data[-1]) if self.remembered else 0
        ends = base + np.cumsum(sizes, dtype=np.int64)
        if signatures is None:
            signatures = np.zeros((batch.size, _BANDS * _ROWS), np.uint8)
        signatures = signatures[remembered].ravel()
        first = self.remembered
        exact = batch.exact[remembered]
        numbers = np.arange(first, first + len(remembered), dtype=np.int32)
        self.exact.add(exact, numbers)
        self.bands.add(keys, values)
        self.shingles.extend(shingles)
        self.ends.extend(ends)
        self.signatures.extend(signatures)
        if self._log is not None:
            for name, part in zip(LOGGED, (exact, keys, values, shingles, ends, signatures), strict=True):
                self._log[name].append(part)

    # -- overused n-grams ----------------------------------------------------------------------

    def _overused(self, batch: "_Batch", remembered: list[int], ids: list[str]) -> np.ndarray:
        """Which of the `remembered` records the n-gram filter drops.

        The paper's rule drops a record with chance Σ count/800 over its 4- to 9-grams seen at
        least 50 times in the corpus. Absolute counts make it depend on the corpus size: at a
        million records every common phrase passes 800 and nearly everything goes. Here an n-gram
        counts through its share of the records, rescaled to R = `ngram_reference_records`:
        it adds share · R / 800 (the paper's count / 800 in a corpus of R records), once its share
        is at least 50 / R (the paper's 50 in R) and it was seen at least 50 times (too few
        sightings say nothing about a small corpus). So a corpus of R records is filtered as the
        paper's rule filters it, and a corpus of any other size as if it were that size. The
        paper's code does not record the size its constants were tuned on; R is 20,000 unless a
        style sets it.

        The rule runs online: record i is judged with the counts and the size of records 1..i
        (itself included), so a verdict is final when it is given and a resumed pass judges only
        new records. In a corpus written in no particular order the shares settle within the
        first few thousand records, after which this is the paper's rule on the whole corpus."""
        grams, owners = batch.ngrams(remembered, *self.filters.ngram_sizes)
        counts = self._count(grams, owners)
        size = (self.remembered - len(remembered) + owners + 1).astype(np.float64)
        chances = drop_chances(counts, owners, size, self.filters, len(remembered))
        return np.array([_uniform(record_id) for record_id in ids]) < chances

    def _count(self, grams: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """Add the n-grams to the sketch; for each, its estimated count as if the records had been
        added one n-gram at a time, in order, and each n-gram read right after its own addition:
        so the estimates do not depend on how the records were batched."""
        item = np.arange(len(grams), dtype=np.uint64)  # a record's n-grams keep one order in any batch
        estimate = np.full(len(grams), np.iinfo(np.int64).max, np.int64)
        for row in range(_SKETCH_ROWS):
            cells = (grams * _SKETCH_MULTIPLIERS[row]) >> np.uint64(64 - _SKETCH_BITS)
            # One sort of (cell, record, n-gram) keys puts each cell's n-grams in the order they
            # would have been added (a plain sort of packed keys is twice as fast as an argsort).
            ordered = np.sort(cells << np.uint64(64 - _SKETCH_BITS) | owners.astype(np.uint64) << _ITEM_BITS | item)
            cells = (ordered >> np.uint64(64 - _SKETCH_BITS)).astype(np.int64)
            first = np.ones(len(ordered), bool)
            first[1:] = cells[1:] != cells[:-1]
            position = np.arange(len(ordered))
            earlier_in_cell = position - np.maximum.accumulate(np.where(first, position, 0))
            counts = self.sketch[row, cells].astype(np.int64) + earlier_in_cell + 1
            items = (ordered & _ITEM_MASK).astype(np.int64)
            estimate[items] = np.minimum(estimate[items], counts)
            self.sketch[row, cells[first]] += np.diff(np.append(position[first], len(ordered))).astype(np.uint32)
        return estimate

    # -- saving and restoring ------------------------------------------------------------------

    def take_log(self) -> dict[str, np.ndarray]:
        """What was remembered since the last call, by part (see LOGGED), as arrays to append."""
        taken = {}
        for name, parts in self._log.items():
            taken[name] = np.concatenate(parts) if parts else np.zeros(0, LOGGED[name])
            parts.clear()
        return taken

    @classmethod
    def restore(cls, filters: Filters, logs: dict[str, np.ndarray], sketch: np.ndarray) -> "CorpusFilter":
        """The filter as it was when `logs` (each part's whole log) and `sketch` were saved."""
        judge = cls(filters, log=True)
        judge.exact = _SortedIndex.build(logs["exact"], np.arange(len(logs["exact"]), dtype=np.int32))
        judge.bands = _SortedIndex.build(logs["band_keys"], logs["band_numbers"])
        judge.shingles.extend(logs["shingles"])
        judge.ends.extend(logs["ends"])
        judge.signatures.extend(logs["signatures"])
        judge.sketch = sketch
        return judge


def drop_chances(counts: np.ndarray, owners: np.ndarray, size: np.ndarray, filters: Filters,
                 records: int) -> np.ndarray:
    """Each record's chance of being dropped for overused n-grams: its n-grams' `counts`, the
    record each belongs to (`owners`, 0..records-1) and the corpus `size` each was counted in."""
    reference = float(filters.ngram_reference_records)
    floor = np.maximum(filters.ngram_min_count, filters.ngram_min_count * size / reference)
    weight = np.where(counts >= floor, counts * reference / (size * filters.ngram_scale), 0.0)
    return np.bincount(owners, weights=weight, minlength=records)


# The parts of a filter's state that only grow, with their types: saved by appending.
LOGGED = {"exact": np.uint64, "band_keys": np.uint64, "band_numbers": np.int32,
          "shingles": np.uint32, "ends": np.int64, "signatures": np.uint8}


class _Batch:
    """A batch of records as hashes: each word, each record's distinct words and word pairs
    (its shingles, sorted), and each record's normalised text."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, exact: np.ndarray):
        self.tokens, self.starts, self.exact = tokens, starts, exact
        self.size = len(starts) - 1
        self.shingles, self.owners, self.offsets = _shingles(tokens, starts)
        self.shingles32 = self.shingles.astype(np.uint32)  # the low half: enough to compare sets

    @classmethod
    def of(cls, tokens: list[list[str]], hashes: "_TokenHashes") -> "_Batch":
        starts = np.zeros(len(tokens) + 1, np.int64)
        np.cumsum([len(t) for t in tokens], out=starts[1:])
        exact = np.array([_hash(" ".join(t)) for t in tokens], np.uint64)
        return cls(hashes([word for record in tokens for word in record]), starts, exact)

    def minhashes(self) -> tuple[np.ndarray, np.ndarray]:
        """Each record's LSH band keys (records, 8) and the low bytes of its 32 min-hashes
        (records, 32); zeros for a record without words."""
        keys = np.zeros((self.size, _BANDS), np.uint64)
        signatures = np.zeros((self.size, _BANDS * _ROWS), np.uint8)
        filled = self.offsets[1:] > self.offsets[:-1]
        if not filled.any():
            return keys, signatures
        starts = self.offsets[:-1][filled]
        for band in range(_BANDS):
            columns = slice(band * _ROWS, (band + 1) * _ROWS)
            hashes = np.minimum.reduceat(_mix(self.shingles[:, None] ^ _MASKS[None, columns]), starts, axis=0)
            signatures[filled, columns] = hashes.astype(np.uint8)
            key = np.full(len(starts), _BAND_SALTS[band], np.uint64)
            for row in range(_ROWS):
                key = _mix(key ^ hashes[:, row])
            keys[filled, band] = key
        return keys, signatures

    def ngrams(self, chosen: list[int], low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of every `low`..`high`-gram of the chosen records (repeats included, as the
        paper counts them), and the position in `chosen` of the record each comes from."""
        lengths = (self.starts[1:] - self.starts[:-1])[chosen]
        total = int(lengths.sum())
        owner = np.repeat(np.arange(len(chosen)), lengths)
        first = np.cumsum(lengths) - lengths  # where each chosen record starts in `words`
        where = np.repeat(self.starts[:-1][chosen] - first, lengths) + np.arange(total)
        words_ = self.tokens[where]
        end = np.repeat(first + lengths, lengths)  # each word's record ends here (exclusive)
        position = np.arange(total)
        grams, owners = [], []
        gram = words_
        for n in range(1, high + 1):
            if n > 1:
                gram = _mix(gram[:-1] * _GRAM_STEP ^ words_[n - 1:])
            if n >= low:
                fits = position[:len(gram)] + n <= end[:len(gram)]
                grams.append(gram[fits])
                owners.append(owner[:len(gram)][fits])
        if not grams:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return np.concatenate(grams), np.concatenate(owners)


def _shingles(tokens: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each record's distinct word and word-pair hashes, sorted: (hashes, owner of each, offsets)."""
    records = len(starts) - 1
    lengths = np.diff(starts)
    owner = np.repeat(np.arange(records), lengths)
    last = np.zeros(len(tokens), bool)
    last[starts[1:][lengths > 0] - 1] = True  # a pair never spans two records
    pairs = _mix(tokens[:-1] * _PAIR_STEP ^ tokens[1:])[~last[:-1]] if len(tokens) > 1 else tokens[:0]
    hashes = np.concatenate([tokens, pairs])
    owners = np.concatenate([owner, owner[:-1][~last[:-1]] if len(tokens) > 1 else owner[:0]])
    order = np.lexsort((hashes, owners))
    hashes, owners = hashes[order], owners[order]
    distinct = np.ones(len(hashes), bool)
    distinct[1:] = (hashes[1:] != hashes[:-1]) | (owners[1:] != owners[:-1])
    hashes, owners = hashes[distinct], owners[distinct]
    return hashes, owners, np.searchsorted(owners, np.arange(records + 1))


class _SortedIndex:
    """uint64 keys -> int32 values (a key may repeat), looked up and extended a batch at a time:
    12 bytes an entry where a dict would take about 100. Entries live in sorted runs, each at least
    four times the next, merged as they fill: a batch's additions cost their own size, not the
    index's, and a lookup searches a handful of runs."""

    def __init__(self):
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    @classmethod
    def build(cls, keys: np.ndarray, values: np.ndarray) -> "_SortedIndex":
        index = cls()
        index.add(keys, values)
        return index

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.runs)

    def matches(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every entry equal to one of `keys`: (index of the key, entry's value) pairs, and the
        number of entries for each key."""
        order = np.argsort(keys)  # sorted queries make numpy's binary searches cache-friendly
        ordered = keys[order]
        count = np.zeros(len(keys), np.int64)
        queries, values = [np.zeros(0, np.int64)], [np.zeros(0, np.int32)]
        for run_keys, run_values in self.runs:
            low = np.searchsorted(run_keys, ordered, "left")
            found = np.searchsorted(run_keys, ordered, "right") - low
            count[order] += found
            hit = found > 0
            low, found = low[hit], found[hit]
            within = np.arange(found.sum()) - np.repeat(np.cumsum(found) - found, found)
            queries.append(np.repeat(order[hit], found))
            values.append(run_values[np.repeat(low, found) + within])
        return np.concatenate(queries), np.concatenate(values), count

    def count(self, keys: np.ndarray) -> np.ndarray:
        return self.matches(keys)[2]

    def add(self, keys: np.ndarray, values: np.ndarray) -> None:
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        self.runs.append((keys[order], values[order]))
        while len(self.runs) > 1 and 4 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            (keys_a, values_a), (keys_b, values_b) = self.runs[-2], self.runs.pop()
            keys, values = np.concatenate([keys_a, keys_b]), np.concatenate([values_a, values_b])
            order = np.argsort(keys, kind="stable")  # timsort: two sorted runs merge in linear time
            self.runs[-1] = (keys[order], values[order])


class _Growing:
    """A numpy array that grows at its end with amortised doubling, as a list does."""

    def __init__(self, dtype):
        self.buffer = np.zeros(1024, dtype)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def data(self) -> np.ndarray:
        return self.buffer[:self.size]

    def slice(self, start: int, end: int) -> np.ndarray:
        return self.buffer[start:end]

    def extend(self, values: np.ndarray) -> None:
        needed = self.size + len(values)
        if needed > len(self.buffer):
            grown = np.zeros(max(needed, 2 * len(self.buffer)), self.buffer.dtype)
            grown[:self.size] = self.data
            self.buffer = grown
        self.buffer[self.size:needed] = values
        self.size = needed


class _TokenHashes:
    """Stable 64-bit hashes of words (Python's own `hash` changes between processes), remembered:
    a corpus uses far fewer distinct words than it has."""

    def __init__(self):
        self.memo: dict[str, int] = {}

    def __call__(self, tokens: list[str]) -> np.ndarray:
        memo = self.memo
        if len(memo) > _TOKEN_MEMO:
            memo.clear()
        hashes = [memo.get(token) for token in tokens]
        for i, value in enumerate(hashes):
            if value is None:  # new in this batch (perhaps met earlier in it)
                token = tokens[i]
                value = memo.get(token)
                if value is None:
                    value = memo[token] = _hash(token)
                hashes[i] = value
        return np.array(hashes, np.uint64)


def _agreement(a: bytes, b: bytes) -> int:
    return sum(x == y for x, y in zip(a, b, strict=True))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of 64-bit integers that spreads each input bit over the
    whole output, so XOR-ing a mask before it gives independent hash functions."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(text: str) -> int:
    """A stable 64-bit hash (Python's own `hash` changes between processes)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _uniform(record_id: str) -> float:
    return _hash("draw:" + record_id) / 2**64


_MASKS = np.array([_hash(f"mask {i}") for i in range(_BANDS * _ROWS)], np.uint64)
_BAND_SALTS = [_hash(f"band {i}") for i in range(_BANDS)]
_PAIR_STEP = np.uint64(_hash("pair") | 1)
_GRAM_STEP = np.uint64(_hash("gram") | 1)
# A packed sort key: cell (22 bits) | record in the batch (13 bits) | n-gram in the batch (29 bits).
_ITEM_BITS = np.uint64(29)
_ITEM_MASK = np.uint64((1 << 29) - 1)
assert BATCH <= 1 << (64 - _SKETCH_BITS - 29)
_SKETCH_MULTIPLIERS = [np.uint64(_hash(f"sketch {i}") | 1) for i in range(_SKETCH_ROWS)]
