"""Style corpora from an LLM: the real openai client against an OpenAI-compatible server on
127.0.0.1 that injects 429s, 500s, timeouts, malformed JSON and empty choices."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stylecap.errors import EXIT_PARTIAL, EXIT_SERVICE, EXIT_USAGE, ServiceError
from stylecap.generate import GenerateConfig, LLMSettings, SourceOptions, generate, iter_corpus_records
from stylecap.generate.loopback import LoopbackLLM

FIXTURES = Path(__file__).parent / "fixtures" / "generate"
SEEDS = FIXTURES / "seeds.txt"
SEED_COUNT = len(SEEDS.read_text().splitlines())


def _config(url: str, out: Path, **llm) -> GenerateConfig:
    settings = LLMSettings(**{"base_url": url, "timeout": 1.0, "concurrency": 8, "model": "loopback",
                              "backoff": 0.05, **llm})
    return GenerateConfig(style="ego-centric", out=out, progress=False,
                          options=SourceOptions(inputs=[str(SEEDS)], llm=settings))


def _corpus(out: Path) -> set[tuple[str, str]]:
    return {(r["id"], r["text"]) for r in iter_corpus_records(out)}


@pytest.fixture
def no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def test_faults_are_counted_and_nothing_is_lost(tmp_path, no_key):
    faults = {1: "429", 2: "500", 3: "timeout", 4: "badjson", 5: "empty"}
    with LoopbackLLM(faults=faults, retry_after=0.05) as server:
        first = generate(_config(server.url, tmp_path / "faulty"))
        run = first["this_run"]
        assert (run["retried"], run["failed"], run["done"]) == (3, 2, SEED_COUNT - 2)
        assert run["requests"] == SEED_COUNT + 3 == server.requests
        assert first["inputs"]["failure_reasons"] == {"malformed response": 1, "empty choices": 1}
        assert run["prompt_tokens"] > 0 and run["cost"] == 0.0  # a local server costs nothing

        second = generate(_config(server.url, tmp_path / "faulty"))  # retries only the two failures
        assert second["this_run"]["inputs"] == 2 and second["inputs"] == {
            "done": SEED_COUNT, "failed": 0, "skipped": 0, "failure_reasons": {}, "skip_reasons": {}}
        generate(_config(server.url, tmp_path / "clean"))

    assert _corpus(tmp_path / "faulty") == _corpus(tmp_path / "clean")
    assert len(_corpus(tmp_path / "clean")) == SEED_COUNT
    record = next(iter_corpus_records(tmp_path / "clean"))
    assert set(record) == {"id", "style", "text", "source", "provenance", "time"}
    assert record["provenance"]["prompt"].startswith("ego-centric.txt@") and record["provenance"]["seed"]


def test_retry_budget_stops_a_failing_server_and_keeps_what_was_done(tmp_path, no_key):
    faults = {n: "500" for n in range(6, 1000)}  # healthy for five requests, then down
    with LoopbackLLM(faults=faults) as server:
        with pytest.raises(ServiceError, match="retry budget"):
            generate(_config(server.url, tmp_path, retry_budget=4, concurrency=1))
        assert server.requests == 5 + 4 + 1  # five answers, four retries, one last failure
    assert len(_corpus(tmp_path)) == 5  # the corpus of the finished inputs is written anyway


def test_retry_after_is_honoured_and_pauses_everyone(tmp_path, no_key):
    with LoopbackLLM(faults={1: "429"}, retry_after=0.6) as server:
        started = time.monotonic()
        summary = generate(_config(server.url, tmp_path))
        assert time.monotonic() - started >= 0.6
    assert summary["this_run"]["retried"] == 1 and summary["records"] == SEED_COUNT


def test_request_rate_limit(tmp_path, no_key):
    with LoopbackLLM() as server:
        config = _config(server.url, tmp_path, requests_per_minute=1200)  # 20 per second
        config.limit = 11
        started = time.monotonic()
        generate(config)
        assert time.monotonic() - started >= 0.5  # ten intervals of 50 ms at least


def test_dry_run_estimates_without_requests(tmp_path, no_key):
    with LoopbackLLM() as server:
        config = _config(server.url, tmp_path / "out", price_in=1.0, price_out=2.0)
        config.dry_run = True
        estimate = generate(config)
        assert server.requests == 0
    assert estimate["requests"] == SEED_COUNT and estimate["max_completion_tokens"] == SEED_COUNT * 64
    assert estimate["max_cost"] == pytest.approx((estimate["prompt_tokens"] + 2 * SEED_COUNT * 64) / 1e6)
    assert not (tmp_path / "out").exists()


def test_free_mode_writes_about_subjects(tmp_path, no_key):
    with LoopbackLLM() as server:
        settings = LLMSettings(base_url=server.url, model="loopback")
        options = SourceOptions(inputs=[str(FIXTURES / "subjects.txt")], subjects=["brass telescope"],
                                samples=2, llm=settings)
        summary = generate(GenerateConfig(style="reviews", source="llm", out=tmp_path, progress=False,
                                          options=options))
    assert summary["this_run"]["requests"] == 10
    subjects = {r["provenance"]["subject"] for r in iter_corpus_records(tmp_path)}
    assert subjects == {"copper kettle", "mountain hostel", "wool blanket", "night market", "brass telescope"}


def test_cli_exit_codes_and_the_key_never_written(tmp_path, monkeypatch, capsys, cli):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code = cli(["generate", "--style", "ego-centric", "--input", str(SEEDS), "--out", str(tmp_path / "a")])
    assert code == EXIT_USAGE and "OPENAI_API_KEY" in capsys.readouterr().err

    secret = "sk-test-do-not-write-me-7f3a"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    with LoopbackLLM(faults={3: "badjson"}) as server:
        code = cli(["generate", "--style", "uplifting", "--input", str(SEEDS), "--out", str(tmp_path / "b"),
                    "--base-url", server.url, "--model", "loopback", "--no-progress", "--backoff", "0.05"])
        assert code == EXIT_PARTIAL
        code = cli(["generate", "--style", "uplifting", "--input", str(SEEDS), "--out", str(tmp_path / "c"),
                    "--base-url", server.url.replace("/v1", "/nowhere"), "--no-progress"])
        assert code == EXIT_SERVICE  # HTTP 404: wrong model or endpoint stops at once
    output = capsys.readouterr()
    written = b"".join(p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file())  # binary files too
    assert secret.encode() not in written and secret not in output.out + output.err
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["inputs"]["failed"] == 1


def test_bench_generate_smoke(tmp_path):
    from stylecap.experiments.generate_speed import bench_generate

    report = bench_generate(requests=40, concurrency=8, latency=0.01, sequential_requests=3,
                            out=tmp_path / "bench.json")
    assert report.ours.items == 40 and report.setup["failed"] == 0 and report.reference.items == 3
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert report.speedup > 0 and saved["speedup"] == report.speedup and saved["unit"] == "requests"


def test_a_generated_corpus_folder_trains_a_style_model(tmp_path, no_key, tiny_clip_spec, cli):
    with LoopbackLLM() as server:
        generate(_config(server.url, tmp_path / "corpus"))
    texts = {text for _, text in _corpus(tmp_path / "corpus")}
    from stylecap.core.tasks import ReadOptions, get_task

    examples = get_task("style").read(tmp_path / "corpus", ReadOptions())
    assert {ex.target for ex in examples} == texts  # every record, nothing from the raw log or manifest
    assert cli(["train", "--task", "style", "--data", str(tmp_path / "corpus"), "--clip", tiny_clip_spec,
                "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4", "--quiet"]) == 0
    assert (tmp_path / "run" / "model" / "stylecap.json").exists()
