"""Corpora at real sizes: the corpus pass in linear time and bounded memory, resumable after
`kill -9` at any moment; the n-gram filter scale-free; books read and split as streams.

The tests are small (seconds). Run this file as a script to measure the full sizes:

    python tests/test_generate_scale.py pass --records 10000 100000 1000000 --kind varied
    python tests/test_generate_scale.py book --megabytes 30 --kind repetitive
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from stylecap.generate import books
from stylecap.generate.filters import CorpusFilter, corpus_pass, drop_chances
from stylecap.generate.judge import judge_corpus
from stylecap.generate.run import record_id
from stylecap.generate.store import CorpusStore, iter_corpus_records
from stylecap.generate.styles import Filters
from stylecap.generate.text import frequent_names, iter_sentences, split_sentences, words

IDENTITY = {"style": "scale", "source": "llm"}

# -- inputs: varied sentences from a random grammar, repetitive ones from a few templates ----------

_SUBJECTS = ("I|We|My sister|My friend|Our guide|An old man|Two children|A woman|The baker|My uncle|"
             "A tourist|The fisherman|Mirela Voss|Tobin|Ilse|Captain Arno").split("|")
_VERBS = ("watched|noticed|photographed|passed|admired|followed|found|painted|spotted|fed|chased|carried|"
          "climbed|crossed|visited|sketched|greeted|described").split("|")
_ADJECTIVES = ("red blue green yellow white black golden silver old tiny tall quiet bright rusty wooden "
               "striped painted sleepy crooked pale dark shiny broken narrow wide round heavy soft brass "
               "leather glass stone velvet muddy frozen sunlit misty crowded empty ancient new").split()
_NOUNS = ("kite boat bicycle lantern ferry tram kitten umbrella bench teapot sailboat scarecrow fountain "
          "tractor parrot wagon clock dog cat horse bird window door bridge cart market stall tower church "
          "shop train car bus table chair lamp book basket bottle cup plate hat coat scarf fence gate "
          "statue crane barrel ladder rope anchor net drum violin mirror carpet candle map letter "
          "bucket kettle sack wheel sign flag balloon chimney well mill barn tent").split()
_PREPOSITIONS = "near|beside|under|behind|along|inside|above|across|past|around|in front of|next to".split("|")
_PLACES = ("harbour market station garden hill river square bakery pier barn park church library "
           "bridge school chapel canal meadow orchard lighthouse quay alley courtyard forest shore").split()
_CLAUSES = "waited|slept|turned|shone|rattled|swayed|glowed|drifted|barked|sang|creaked|flickered".split("|")
_TIMES = ("at dawn|this morning|after lunch|at dusk|in the rain|on Sunday|in the snow|before supper|"
          "at noon|last night|in the fog|at midnight").split("|")
# Stock phrases a generator overuses: the n-gram filter's quarry.
_STOCK = ["as the sun began to set", "on a bright and sunny day", "in the heart of the old town",
          "with a smile on my face"]

_TEMPLATES = ["The room was {a} and the bed was very comfortable.",
              "Great location near the {n}, the staff were friendly and helpful.",
              "I could see the {n} from my window and it looked {a}.",
              "Breakfast was {a} and the view of the {n} was lovely.",
              "We would definitely stay here again, the {n} was {a}."]


def varied_sentence(rng: random.Random) -> str:
    parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), "a", rng.choice(_ADJECTIVES), rng.choice(_NOUNS),
             rng.choice(_PREPOSITIONS), "the", rng.choice(_ADJECTIVES), rng.choice(_PLACES)]
    if rng.random() < 0.6:
        parts += ["while a", rng.choice(_ADJECTIVES), rng.choice(_NOUNS), rng.choice(_CLAUSES)]
    if rng.random() < 0.5:
        parts.append(rng.choice(_TIMES))
    if rng.random() < 0.08:
        parts.append(rng.choice(_STOCK))
    return " ".join(parts) + "."


def repetitive_sentence(rng: random.Random) -> str:
    return rng.choice(_TEMPLATES).format(a=rng.choice(_ADJECTIVES[:8]), n=rng.choice(_NOUNS[:12]))


SENTENCES = {"varied": varied_sentence, "repetitive": repetitive_sentence}

_BOOK_TEMPLATES = ["{name} looked at the {a} {n} by the window.", "{name} stood near the {n} and smiled.",
                   "The {a} light fell on {name} and the {n}.", "{name} held the {a} {n} in both hands."]


def repetitive_book_sentence(rng: random.Random) -> str:
    return rng.choice(_BOOK_TEMPLATES).format(name=rng.choice(["Tobin", "Ilse", "Mirela Voss"]),
                                              a=rng.choice(_ADJECTIVES[:6]), n=rng.choice(_NOUNS[:8]))


BOOK_SENTENCES = {"varied": varied_sentence, "repetitive": repetitive_book_sentence}


def write_book(path: Path, megabytes: float, kind: str, seed: int = 0) -> None:
    """A plain-text book as Project Gutenberg ships one: licence header, title page, contents,
    chapters of wrapped paragraphs, licence footer; about `megabytes` MB."""
    rng = random.Random(seed)
    sentence = BOOK_SENTENCES[kind]
    chapters = max(1, int(megabytes * 8))
    with open(path, "w", encoding="utf-8") as book:
        book.write("The Project Gutenberg eBook of A Harbour Town\n\nThis eBook is for the use of anyone.\n\n"
                   "*** START OF THE PROJECT GUTENBERG EBOOK A HARBOUR TOWN ***\n\nA HARBOUR TOWN\n\n"
                   "CONTENTS\n\n" + "".join(f"CHAPTER {n}\n" for n in range(1, chapters + 1)) + "\n\n")
        per_chapter = megabytes * (1 << 20) / chapters
        for n in range(1, chapters + 1):
            book.write(f"CHAPTER {n}\n\n")
            written = 0
            while written < per_chapter:
                paragraph = " ".join(sentence(rng) for _ in range(rng.randint(3, 8)))
                lines, line = [], ""
                for word in paragraph.split(" "):  # wrapped at about 70 columns
                    if line and len(line) + len(word) >= 70:
                        lines.append(line)
                        line = ""
                    line = f"{line} {word}" if line else word
                text = "\n".join(lines + [line]) + "\n\n"
                book.write(text)
                written += len(text)
        book.write("*** END OF THE PROJECT GUTENBERG EBOOK A HARBOUR TOWN ***\n\nLicence text follows.\n")


def write_raw(folder: Path, records: int, kind: str, seed: int = 0, per_input: int = 1000,
              start: int = 0) -> None:
    """A corpus folder whose raw log holds `records` generated sentences (inputs of `per_input`),
    as `stylecap generate` would have written them."""
    rng = random.Random(f"{seed}:{start}")
    sentence = SENTENCES[kind]
    store = CorpusStore(folder, IDENTITY)
    try:
        for first in range(start, start + records, per_input):
            key = f"seed:{first // per_input}"
            count = min(per_input, start + records - first)
            store.commit(key, [{"id": record_id("scale", key, i), "style": "scale", "text": sentence(rng),
                                "source": "llm", "provenance": {"input": key}, "time": "2024-01-01T00:00:00Z"}
                               for i in range(count)])
    finally:
        store.close()


def run_pass(folder: Path, **settings) -> dict:
    store = CorpusStore(folder, IDENTITY)
    try:
        result = judge_corpus(store, Filters(), **settings)
    finally:
        store.close()
    return {"raw_records": result.raw_records, "records": result.records, "dropped": result.dropped,
            "judged_now": result.judged_now, "seconds": result.seconds}


def corpus_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.glob("shard-*.jsonl")))


# -- the tests ------------------------------------------------------------------------------------

def test_a_killed_corpus_pass_resumes_without_losing_or_repeating_a_record(tmp_path):
    """SIGKILL the pass at random moments (mid-batch, mid-checkpoint, anywhere), resume each time:
    the corpus ends byte for byte as an uninterrupted pass makes it."""
    records = 20_000
    for name in ("killed", "clean"):
        write_raw(tmp_path / name, records // 2, "varied")
        write_raw(tmp_path / name, records // 2, "repetitive", start=records // 2)
    clean = run_pass(tmp_path / "clean")
    assert clean["raw_records"] == records

    code = ("import sys, json; sys.path.insert(0, %r); from test_generate_scale import run_pass; "
            "from pathlib import Path; print(json.dumps(run_pass(Path(sys.argv[1]), checkpoint_records=1000, "
            "batch=500)))" % str(Path(__file__).parent))
    rng = random.Random(7)
    state = tmp_path / "killed" / "raw" / "judged" / "state.json"

    def judged() -> int:
        return json.loads(state.read_text())["raw_records"] if state.exists() else 0

    kills = 0
    while kills < 6:
        before = judged()
        process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "killed")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while judged() == before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # until it has made some progress ...
        # ... then at a random moment, at most one checkpoint on (a fast machine gets far in 0.25 s)
        moment, progressed = time.monotonic() + rng.uniform(0.0, 0.25), judged()
        while time.monotonic() < moment and judged() < progressed + 1000 and process.poll() is None:
            time.sleep(0.002)
        if process.poll() is not None:
            break  # it finished: fewer kills than asked, which the assertion below reports
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        assert judged() < records
    assert kills >= 5
    finished = subprocess.run([sys.executable, "-c", code, str(tmp_path / "killed")], capture_output=True,
                              text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    resumed = json.loads(finished.stdout)
    assert 0 < resumed["judged_now"] < records  # it went on from a checkpoint, not from the start
    assert (resumed["raw_records"], resumed["records"], resumed["dropped"]) == \
        (clean["raw_records"], clean["records"], clean["dropped"])
    assert corpus_bytes(tmp_path / "killed") == corpus_bytes(tmp_path / "clean")
    ids = Counter(record["id"] for record in iter_corpus_records(tmp_path / "killed"))
    assert len(ids) == clean["records"] and max(ids.values()) == 1  # none lost, none twice


def test_the_pass_judges_only_new_records_and_equals_one_pass_over_all(tmp_path):
    write_raw(tmp_path / "grown", 6000, "varied")
    first = run_pass(tmp_path / "grown")
    write_raw(tmp_path / "grown", 4000, "repetitive", start=6000)
    second = run_pass(tmp_path / "grown")
    assert (first["judged_now"], second["judged_now"]) == (6000, 4000)
    assert run_pass(tmp_path / "grown")["judged_now"] == 0

    write_raw(tmp_path / "once", 6000, "varied")
    write_raw(tmp_path / "once", 4000, "repetitive", start=6000)
    once = run_pass(tmp_path / "once")
    assert (once["records"], once["dropped"]) == (second["records"], second["dropped"])
    assert corpus_bytes(tmp_path / "grown") == corpus_bytes(tmp_path / "once")


def test_new_filter_settings_judge_everything_anew(tmp_path):
    write_raw(tmp_path, 3000, "repetitive")
    run_pass(tmp_path)
    store = CorpusStore(tmp_path, IDENTITY)
    try:
        looser = judge_corpus(store, Filters(near_duplicate=0.95))
    finally:
        store.close()
    assert looser.rejudged and looser.judged_now == 3000
    assert looser.records == len(list(iter_corpus_records(tmp_path)))


def test_verdicts_do_not_depend_on_batch_boundaries():
    rng = random.Random(3)
    records = [{"id": f"{i:06d}", "text": (varied_sentence if i % 3 else repetitive_sentence)(rng)}
               for i in range(5000)]

    def verdicts(sizes):
        judge, out, start = CorpusFilter(Filters()), [], 0
        for size in sizes:
            out += judge.judge(records[start:start + size])
            start += size
        return out

    whole = verdicts([len(records)])
    assert verdicts([1] * 50 + [333, 1234, 7, 3376]) == whole
    assert Counter(whole)["overused n-grams"] > 0 and Counter(whole)["near duplicate"] > 0


def test_near_duplicates_are_found_with_a_bounded_number_of_comparisons():
    """Planted near duplicates (one word changed) are caught; every drop is a true near duplicate
    (each candidate is compared in full); a band value never holds more than four records."""
    rng = random.Random(5)
    originals = [varied_sentence(rng) for _ in range(2000)]
    texts = list(originals)
    planted = set()
    for i in rng.sample(range(len(originals)), 200):
        tokens = originals[i].split()
        position = rng.randrange(len(tokens))
        tokens[position] = rng.choice(["scarlet", "violet", "ivory", "amber"])
        planted.add(len(texts))
        texts.append(" ".join(tokens))
    records = [{"id": f"{i:06d}", "text": t} for i, t in enumerate(texts)]
    judge = CorpusFilter(Filters())
    verdicts = judge.judge(records)
    near = {i for i, verdict in enumerate(verdicts) if verdict == "near duplicate"}
    caught = len(near & planted) / len(planted)
    assert caught >= 0.9
    remembered = [i for i, verdict in enumerate(verdicts) if verdict in (None, "overused n-grams")]
    shingles = [_shingles(text) for text in texts]
    for i in near:  # similar enough to an earlier record that was not itself a duplicate
        assert max(_jaccard(shingles[i], shingles[j]) for j in remembered if j < i) >= 0.7
    for keys, _ in judge.bands.runs:
        assert max(Counter(keys.tolist()).values()) <= 4


def _shingles(text: str) -> set:
    """Words and word pairs, as the near-duplicate filter compares them (here unhashed)."""
    tokens = words(text)
    return set(tokens) | set(zip(tokens, tokens[1:], strict=False))


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def test_the_ngram_rule_is_the_papers_at_the_reference_size_and_scale_free():
    """At R records an n-gram seen c >= 50 times adds c / 800, as in the paper; at 10·R records the
    same share adds the same; below 50 sightings nothing counts."""
    filters = Filters()  # 50, 800, R = 20,000
    reference = filters.ngram_reference_records
    counts = np.array([50, 400, 49, 800])
    owners = np.array([0, 0, 1, 1])
    chance = drop_chances(counts, owners, np.full(4, float(reference)), filters, records=2)
    assert chance.tolist() == pytest.approx([450 / 800, 800 / 800])
    bigger = drop_chances(counts * 10, owners, np.full(4, 10.0 * reference), filters, records=2)
    assert bigger.tolist() == pytest.approx(chance.tolist())
    small = drop_chances(np.array([49, 60]), np.array([0, 1]), np.full(2, 1000.0), filters, records=2)
    assert small.tolist() == pytest.approx([0.0, 60 / 1000 * reference / 800])


def test_the_kept_share_does_not_fall_as_the_corpus_grows():
    """Under absolute counts a corpus four times larger loses far more to the n-gram filter; with
    shares the kept fraction stays put (above the reference size; below it, the 50-sighting floor
    makes a small corpus's filter milder). A small reference size keeps the test small."""
    filters = Filters(ngram_reference_records=2000)
    fractions = []
    for size in (4000, 16000):
        rng = random.Random(11)
        records = [{"id": f"{i:06d}", "text": varied_sentence(rng)} for i in range(size)]
        kept, drops = corpus_pass(records, filters)
        assert drops["overused n-grams"] > 0.01 * size
        fractions.append(len(kept) / size)
    assert abs(fractions[0] - fractions[1]) < 0.01


BOOK = Path(__file__).parent / "fixtures" / "generate" / "book.txt"


@pytest.mark.parametrize("variant", ["as shipped", "no licence", "no headings", "crlf", "cp1252", "generated"])
def test_a_book_read_as_a_stream_gives_the_whole_texts_sentences(variant, tmp_path, monkeypatch):
    """Whatever the piece size, the streamed story and sentences are those the whole text gives."""
    text = BOOK.read_text()
    if variant == "no licence":
        text = text.split("*** START", 1)[0] + text.split("*** START", 1)[1].split("\n", 1)[1]
    elif variant == "no headings":
        text = books._HEADING.sub("", text)
    elif variant == "crlf":
        text = text.replace("\n", "\r\n")
    elif variant == "generated":
        write_book(tmp_path / "book.txt", 0.2, "varied")
        text = (tmp_path / "book.txt").read_text()
    data = text.encode("cp1252" if variant == "cp1252" else "utf-8") + (b"\x93the end\x94" if variant == "cp1252" else b"")
    whole = books.book_text(data)
    start, end = books.story_span(whole)
    story = books.without_headings(whole[start:end])
    expected = [(offset + start, sentence) for offset, sentence in split_sentences(story)]
    for piece in (1 << 20, 64, 7):
        monkeypatch.setattr(books, "_READ", piece)
        book = books.Book(data)
        assert book.span() == (start, end)
        assert "".join(book.story()) == story
        assert list(iter_sentences(book.story(), start)) == expected
        assert frequent_names(book.story()) == frequent_names(s for _, s in expected)


def test_sentences_split_alike_wherever_the_text_is_cut():
    rng = random.Random(1)
    alphabet = ["a", "B", "1", " ", "\n", "\n\n", ".", "!", "?", '"', "\u201d", ")", "(", "Mr.", "etc.", " \n \n"]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 50)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert list(iter_sentences(pieces)) == split_sentences(text), (text, pieces)


def test_a_book_is_split_in_memory_that_does_not_grow_with_it(tmp_path):
    """Python's own allocations while all sentences of a 3 MB book go by stay near a few pieces
    read (1 MB each), not the book's size (its text and list of sentences took 17 MB here)."""
    import tracemalloc

    write_book(tmp_path / "book.txt", 3, "varied")
    book = books.Book(tmp_path / "book.txt")
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_sentences(book.story(), book.span()[0]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        book.close()
    assert count > 35_000
    assert peak < 12 << 20


def test_an_input_whose_stream_fails_midway_leaves_nothing_behind(tmp_path):
    store = CorpusStore(tmp_path, IDENTITY)
    store.commit("seed:a", [{"id": "a", "text": "A red kite.", "provenance": {"input": "seed:a"}}])
    shard = next((tmp_path / "raw").glob("shard-*.ndjson"))
    size = shard.stat().st_size

    def failing():
        for i in range(25_000):  # more than one piece is written before the failure
            yield {"id": f"b{i}", "text": "A blue boat.", "provenance": {"input": "seed:b"}}
        raise OSError("the disk went away")

    with pytest.raises(OSError):
        store.commit("seed:b", failing())
    assert shard.stat().st_size == size and "seed:b" not in store.done
    store.close()


# -- measurements at full size (not tests) --------------------------------------------------------

_PASS_CHILD = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_generate_scale import run_pass
result = run_pass(Path(sys.argv[1]))
usage = resource.getrusage(resource.RUSAGE_SELF)
result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)  # the wall time depends on the machine's load
print(json.dumps(result))
"""


def measure_pass(records: int, kind: str, folder: Path) -> dict:
    """Write `records` generated sentences to a raw log, then time one corpus pass over them in a
    fresh process (its peak resident memory included)."""
    started = time.perf_counter()
    write_raw(folder, records, kind)
    written = time.perf_counter() - started
    child = subprocess.run([sys.executable, "-c", _PASS_CHILD, str(folder), str(Path(__file__).parent)],
                           capture_output=True, text=True, check=True)
    result = json.loads(child.stdout)
    kept = result["records"] / result["raw_records"]
    return {"sentences": records, "kind": kind, "write_raw_seconds": round(written, 1), **result,
            "kept_fraction": round(kept, 4)}


def measure_book(megabytes: float, kind: str, folder: Path) -> dict:
    """Write a book, then time `stylecap generate --source books` on it in a fresh process."""
    import resource

    book = folder / f"{kind}-book.txt"
    write_book(book, megabytes, kind)
    command = [sys.executable, "-m", "stylecap", "generate", "--style", "character-based", "--source", "books",
               "--input", str(book), "--out", str(folder / "corpus"), "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    manifest = json.loads((folder / "corpus" / "manifest.json").read_text())
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"book_mb": round(book.stat().st_size / (1 << 20), 1), "kind": kind, "seconds": round(seconds, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "sentences_accepted": manifest["raw_records"], "records": manifest["records"],
            "rejected": manifest["this_run"]["rejected"], "dropped": manifest["dropped"],
            "corpus_pass_seconds": manifest["this_run"]["corpus_pass"]["seconds"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="what", required=True)
    passes = commands.add_parser("pass", help="the corpus pass over N generated sentences")
    passes.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    passes.add_argument("--kind", choices=sorted(SENTENCES), default="varied")
    books = commands.add_parser("book", help="`stylecap generate --source books` on a generated book")
    books.add_argument("--megabytes", type=float, default=30.0)
    books.add_argument("--kind", choices=sorted(SENTENCES), default="varied")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "pass":
            for n in args.records:
                print(json.dumps(measure_pass(n, args.kind, Path(tmp) / f"{args.kind}-{n}")), flush=True)
        else:
            print(json.dumps(measure_book(args.megabytes, args.kind, Path(tmp))), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
