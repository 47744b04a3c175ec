"""`stylecap generate --style uplifting` as typed: the built-in everyday-scene seed captions stand in
for a missing --input, and `--provider local` runs a transformers model in this process (the
built-in tiny LM here: random weights write junk, so these tests check the pipeline, not quality)."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

import pytest

from stylecap.errors import EXIT_MODEL, EXIT_PARTIAL, EXIT_USAGE
from stylecap.generate import GenerateConfig, LLMSettings, generate, iter_corpus_records
from stylecap.generate.loopback import LoopbackLLM
from stylecap.generate.seeds import _draw_distinct, builtin_seeds, grammar, participle, third_person, trigram_variety

# Every filter relaxed: the tiny LM's random text must reach the corpus for provenance to be seen.
LOOSE_STYLE = """description = "uplifting, with every filter relaxed"
source = "llm"
prompt = "uplifting.txt"
[filters]
min_words = 1
max_words = 1000
language = ""
near_duplicate = 1.01
ngram_min_count = 1000000000
"""


@pytest.fixture
def no_llm_env(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# ----------------------------------------------------------------------------- built-in seeds

def test_builtin_seeds_are_many_distinct_and_repeatable():
    seeds = builtin_seeds()
    captions = [caption for _, caption in seeds]
    distinct, trigram_rate = trigram_variety(captions)
    assert distinct == len(captions) >= 2000
    assert trigram_rate > 0.2  # measured 0.28: far from one template with words swapped
    assert [name for name, _ in seeds[:2]] == ["everyday-v1:0", "everyday-v1:1"]
    rules = grammar()
    assert _draw_distinct(rules, len(captions), rules["seed"]) == captions  # same seed, same set
    assert _draw_distinct(rules, 50, rules["seed"] + 1) != captions[:50]


def test_builtin_seeds_are_grammatical():
    rules = grammar()
    vowel_words = {word for word in rules["a_before"]}
    for _, caption in builtin_seeds():
        assert caption[0].isupper() and caption.endswith(".") and "  " not in caption, caption
        assert caption.count(".") == 1 and ",," not in caption and " ," not in caption, caption
        for article, word in re.findall(r"\b(a|an|A|An) ([\w'-]+)", caption):
            vowel = word[0].lower() in "aeiou" and not any(word.lower().startswith(w) for w in vowel_words)
            assert (article.lower() == "an") == vowel, caption
    assert [third_person(v, rules) for v in ("slice", "wash", "carry", "play", "go", "fix")] == \
        ["slices", "washes", "carries", "plays", "goes", "fixes"]
    assert [participle(v, rules) for v in ("slice", "sit", "lie", "knit", "read", "see")] == \
        ["slicing", "sitting", "lying", "knitting", "reading", "seeing"]


def test_generate_with_no_input_rewrites_the_builtin_seeds_and_resumes(tmp_path, no_llm_env, capsys, cli):
    out = tmp_path / "uplifting"
    with LoopbackLLM() as server:
        command = ["generate", "--style", "uplifting", "--out", str(out), "--base-url", server.url,
                   "--model", "loopback", "--no-progress"]
        assert cli(command + ["--limit", "30"]) == 0
        assert "built-in everyday-scene captions" in capsys.readouterr().err
        assert cli(command + ["--limit", "45"]) == 0  # the same seed ids: only the 15 new ones run
        assert server.requests == 45
    manifest = _manifest(out)
    assert manifest["this_run"]["inputs"] == 15 and manifest["inputs"]["done"] == 45
    assert manifest["settings"]["provider"] == "openai" and manifest["settings"]["base_url"] == server.url
    records = list(iter_corpus_records(out))
    assert len(records) == 45
    assert {r["provenance"]["seed_id"] for r in records} == {f"everyday-v1:{i}" for i in range(45)}
    assert all(r["provenance"]["provider"] == "openai" for r in records)


def test_dry_run_counts_every_builtin_seed_and_free_styles_still_need_subjects(tmp_path, no_llm_env,
                                                                             capsys, cli):
    summary = generate(GenerateConfig(style="ego-centric", out=tmp_path / "dry", dry_run=True))
    assert summary["requests"] == len(builtin_seeds()) and not (tmp_path / "dry").exists()
    assert cli(["generate", "--style", "character-based", "--out", str(tmp_path / "cb")]) == EXIT_USAGE
    assert "needs subjects" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the local provider

def test_local_provider_end_to_end_with_resume(tmp_path, capsys, cli):
    style = tmp_path / "loose.toml"
    style.write_text(LOOSE_STYLE)
    out = tmp_path / "local"
    command = ["generate", "--style", str(style), "--provider", "local", "--model", "tiny-gpt2", "--out",
               str(out), "--max-tokens", "12", "--concurrency", "4", "--no-progress"]

    code = cli(command + ["--limit", "10"])
    first = _manifest(out)
    run = first["this_run"]
    assert run["inputs"] == 10 == run["done"] + run["failed"] and run["requests"] == 10
    assert code == (EXIT_PARTIAL if run["failed"] else 0)
    assert run["done"] >= 5 and run["cost"] == 0.0 and run["prompt_tokens"] > 0
    assert first["settings"]["provider"] == "local" and first["settings"]["model"] == "tiny-gpt2"
    assert "base_url" not in first["settings"]  # no server was asked
    kept = {(r["id"], r["text"]) for r in iter_corpus_records(out)}
    assert kept and all(r["provenance"]["provider"] == "local" for r in iter_corpus_records(out))

    code = cli(command + ["--limit", "16"])
    second = _manifest(out)
    assert code == (EXIT_PARTIAL if second["inputs"]["failed"] else 0)  # any input still failed, from either run
    assert second["this_run"]["inputs"] == 6 + run["failed"]  # the new seeds and the failed ones only
    assert second["inputs"]["done"] + second["inputs"]["failed"] == 16
    assert kept <= {(r["id"], r["text"]) for r in iter_corpus_records(out)}  # nothing redone or lost
    journal = [json.loads(line) for line in (out / "raw" / "inputs.ndjson").read_text().splitlines()]
    done_keys = [entry["key"] for entry in journal if entry["status"] == "done"]
    assert len(done_keys) == len(set(done_keys)) == second["inputs"]["done"]


def _tiny_folder(tmp_path: Path, name: str) -> Path:
    from stylecap.core.lms import materialise_builtin

    folder = tmp_path / name
    shutil.copytree(materialise_builtin("tiny-gpt2"), folder)
    return folder


def test_local_folder_with_a_chat_template_is_asked_through_it_in_batches(tmp_path):
    from transformers import AutoTokenizer

    from stylecap.generate.local import LocalLM
    from stylecap.generate.progress import Tally

    folder = _tiny_folder(tmp_path, "chat-model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = ("{% for m in messages %}<user> {{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %} <assistant>{% endif %}")
    tokenizer.save_pretrained(folder)

    tally = Tally()
    lm = LocalLM(LLMSettings(model=str(folder), concurrency=3, max_tokens=6), tally)
    assert lm.model.chat and lm.model.prompt_text("A dog.") == "<user> A dog. <assistant>"

    async def ask_six():
        replies = await asyncio.gather(*(lm.complete(f"Caption {i}: a dog.", i) for i in range(6)),
                                       return_exceptions=True)
        await lm.aclose()
        return replies

    replies = asyncio.run(ask_six())
    assert len(replies) == 6 and lm.batches == 2  # six prompts in two batches of three
    assert tally.requests == 6 and tally.tokens_in > 0


def test_base_model_without_a_chat_template_gets_the_plain_prompt(tmp_path):
    from stylecap.generate.local import LocalLM
    from stylecap.generate.progress import Tally

    lm = LocalLM(LLMSettings(model="tiny-gpt2", concurrency=2, max_tokens=4), Tally())
    assert not lm.model.chat and lm.model.prompt_text("Caption: a dog.\nUplifting:") == "Caption: a dog.\nUplifting:"


def test_local_provider_user_errors(tmp_path, capsys, cli):
    base = ["generate", "--style", "uplifting", "--limit", "2", "--no-progress"]
    assert cli(base + ["--out", str(tmp_path / "a"), "--provider", "nowhere"]) == EXIT_USAGE
    assert cli(base + ["--out", str(tmp_path / "b"), "--provider", "local"]) == EXIT_USAGE  # gpt-4o-mini
    assert cli(base + ["--out", str(tmp_path / "b"), "--provider", "local", "--model", "tiny-gpt2",
                       "--base-url", "http://127.0.0.1:9/v1"]) == EXIT_USAGE
    assert cli(base + ["--out", str(tmp_path / "c"), "--provider", "local", "--model",
                       str(tmp_path / "missing")]) == EXIT_MODEL

    pickled = _tiny_folder(tmp_path, "pickled")  # weights only as a pickle: never unpickled
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not a pickle anyone should load")
    assert cli(base + ["--out", str(tmp_path / "d"), "--provider", "local", "--model", str(pickled)]) == EXIT_MODEL

    remote = tmp_path / "remote-code"  # a folder whose model needs its own Python code: never run
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"model_type": "custom", "auto_map": {
        "AutoConfig": "custom.CustomConfig", "AutoModelForCausalLM": "custom.CustomModel"}}))
    (remote / "custom.py").write_text(f"open({str(remote / 'ran')!r}, 'w').write('ran')\n")
    assert cli(base + ["--out", str(tmp_path / "e"), "--provider", "local", "--model", str(remote)]) == EXIT_MODEL
    assert not (remote / "ran").exists()

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 6 and "unknown provider" in errors[0] and "not 'gpt-4o-mini'" in errors[1]
    assert "--base-url" in errors[2] and "not found" in errors[3]
    assert "safetensors" in errors[4] and "custom code" in errors[5]
