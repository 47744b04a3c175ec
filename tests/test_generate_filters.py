"""Style corpora: styles as data, text helpers and the filters that decide what enters a corpus."""
from __future__ import annotations

import json
import sys

import pytest

from stylecap.errors import InputError, UsageError
from stylecap.generate import load_style, read_corpus_texts, style_names
from stylecap.generate.filters import corpus_pass, reject_reason
from stylecap.generate.limits import backoff, parse_retry_after
from stylecap.generate.llm import clean_reply
from stylecap.generate.styles import Filters
from stylecap.generate.text import looks_like, split_sentences


def test_the_four_styles_of_the_paper_ship_as_data():
    assert style_names() == ["character-based", "ego-centric", "reviews", "uplifting"]
    ego = load_style("ego-centric")
    assert ego.mode == "rewrite" and ego.source == "llm" and ego.reply_label == "First person"
    assert "{seed}" not in ego.render("A cat on a mat.") and "A cat on a mat." in ego.render("A cat on a mat.")
    assert load_style("character-based").mode == "free" and load_style("reviews").source == "reviews"


def test_a_user_style_is_a_toml_file_and_a_prompt(tmp_path):
    prompt = tmp_path / "pirate.txt"
    prompt.write_text("Say it like a pirate.\nPlain: {seed}\nPirate:")
    spec = tmp_path / "pirate.toml"
    spec.write_text('description = "arr"\nsource = "llm"\n[filters]\nmin_words = 2\n')
    style = load_style(str(spec), prompt_file=prompt)
    assert (style.name, style.mode, style.filters.min_words) == ("pirate", "rewrite", 2)
    spec.write_text('[filters]\nmin_wrds = 2\n')
    with pytest.raises(InputError, match="min_wrds"):
        load_style(str(spec), prompt_file=prompt)
    with pytest.raises(UsageError, match="unknown style"):
        load_style("no-such-style")


def test_sentences_keep_offsets_and_abbreviations():
    text = 'Mr. Hale waved. "Look!" she said.\n\nA red boat sailed past at 5 p.m. today'
    sentences = split_sentences(text)
    assert [s for _, s in sentences] == ["Mr. Hale waved.", '"Look!" she said.', "A red boat sailed past at 5 p.m. today"]
    assert all(text[offset:].startswith(s[:5]) for offset, s in sentences)


def test_per_sentence_filters_name_their_reason():
    filters = Filters(min_words=4, max_words=12)
    assert reject_reason("Too short.", filters) == "too short"
    assert reject_reason("word " * 13, filters) == "too long"
    assert reject_reason("Ein roter Ballon schwebt über dem großen Platz.", filters) == "wrong language"
    assert reject_reason("A dog runs on the beach.", filters, seed="a dog runs on the beach") == "seed copied back"
    assert reject_reason("It was a strange year for us.", filters, visual=True) == "not visual"
    assert reject_reason("I watched a red kite over the harbour.", filters, seed="A kite flies.") is None
    assert looks_like("1234 5678 #### ////", "en") is False


def _records(texts):
    return [{"id": f"{i:04d}", "text": t} for i, t in enumerate(texts)]


def test_corpus_pass_drops_exact_and_near_duplicates_keeping_the_first_id():
    texts = ["I watched a red kite drift over the old harbour at dawn.",
             "I watched a red kite drift over the old harbour at dawn!",
             "I watched a red kite drift over the old harbour at dusk.",
             "We found a striped umbrella leaning on the bakery door."]
    kept, drops = corpus_pass(list(reversed(_records(texts))), Filters())
    assert [r["id"] for r in kept] == ["0000", "0003"]
    assert drops == {"exact duplicate": 1, "near duplicate": 1}


def test_overused_ngrams_are_dropped_repeatably():
    """The paper's filter, on shares: once "I can see the" and friends have been seen 50 times,
    each makes up nearly all of the records so far and the records using them go; the same ones go
    on every run."""
    texts = [f"I can see the {w} from my window today number {i}." for i, w in
             enumerate(["sea", "hill", "park", "road", "tower", "river"] * 50)]
    texts += [f"Unique sentence {i} about a {c} lantern on a quiet pier." for i, c in enumerate(["red", "blue"] * 10)]
    filters = Filters(near_duplicate=1.01)  # isolate the n-gram filter
    kept, drops = corpus_pass(_records(texts), filters)
    assert drops["overused n-grams"] > 250  # "I can see the" and friends are everywhere
    assert sum("Unique" in r["text"] for r in kept) == 20
    again, _ = corpus_pass(_records(texts), filters)
    assert again == kept
    assert corpus_pass(kept, filters)[0] == kept  # a filtered corpus passes again unchanged


def test_clean_reply_strips_labels_marks_and_quotes():
    assert clean_reply('First person: "We rode the ferry."\n\n- I fed the gulls.', "First person") == [
        "We rode the ferry.", "I fed the gulls."]
    assert clean_reply("3 dogs chased me: it was fun.") == ["3 dogs chased me: it was fun."]


def test_retry_after_and_backoff():
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert backoff(1, retry_after=3.0) == 3.0
    assert all(0 <= backoff(10, base=0.5, cap=4.0) <= 4.0 for _ in range(50))


def test_pacer_spaces_concurrent_waiters_even_after_a_blocked_loop():
    import asyncio
    import time

    from stylecap.generate.limits import Pacer

    async def run() -> list[float]:
        pacer, released = Pacer(rate=50), []

        async def one():
            await pacer.wait()
            released.append(time.monotonic())

        tasks = [asyncio.create_task(one()) for _ in range(8)]
        time.sleep(0.1)  # the event loop is blocked: slots already due must not fire together
        await asyncio.gather(*tasks)
        return released

    released = asyncio.run(run())
    assert min(b - a for a, b in zip(released, released[1:], strict=False)) >= 0.019


def test_read_corpus_texts_reads_only_top_level_jsonl(tmp_path):
    (tmp_path / "shard-00000.jsonl").write_text(json.dumps({"text": "A red kite."}) + "\n")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "shard-00000.ndjson").write_text(json.dumps({"text": "raw"}) + "\n")
    assert read_corpus_texts(tmp_path) == ["A red kite."]
    (tmp_path / "shard-00001.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(InputError, match="shard-00001.jsonl:1"):
        read_corpus_texts(tmp_path)


def test_generate_package_does_not_import_torch():
    import subprocess

    code = "import sys, stylecap.generate, stylecap.experiments.generate_speed; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
