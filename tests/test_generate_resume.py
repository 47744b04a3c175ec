"""Style corpora survive `kill -9`: a generator killed several times mid-run and resumed ends with
the same corpus as one that was never interrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from stylecap.errors import UsageError
from stylecap.generate import GenerateConfig, LLMSettings, SourceOptions, generate, iter_corpus_records
from stylecap.generate.loopback import LoopbackLLM
from stylecap.generate.store import CorpusStore

SEEDS = 120


def _seeds(tmp_path: Path) -> Path:
    colours = ["red", "blue", "green", "yellow", "white", "black"]
    things = ["kite", "boat", "bicycle", "lamp", "tractor", "umbrella", "bench", "clock", "wagon", "teapot"]
    lines = [f"A {c} {t} stands near house number {i}." for i, (c, t) in
             enumerate((c, t) for c in colours for t in things for _ in range(2))]
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(lines[:SEEDS]))
    return path


def _done_lines(out: Path) -> int:
    journal = out / "raw" / "inputs.ndjson"
    return journal.read_bytes().count(b"\n") if journal.exists() else 0


def _corpus(out: Path) -> set[tuple[str, str]]:
    return {(r["id"], r["text"]) for r in iter_corpus_records(out)}


def test_kill_9_several_times_then_resume_equals_an_uninterrupted_run(tmp_path):
    seeds = _seeds(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    with LoopbackLLM(latency=0.03) as server:
        command = [sys.executable, "-m", "stylecap", "generate", "--style", "ego-centric",
                   "--input", str(seeds), "--out", str(tmp_path / "killed"), "--base-url", server.url,
                   "--model", "loopback", "--concurrency", "4", "--no-progress"]
        kills = 0
        for _ in range(3):
            before = _done_lines(tmp_path / "killed")
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 30
            while _done_lines(tmp_path / "killed") < before + 12 and process.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        assert kills == 3 and _done_lines(tmp_path / "killed") < SEEDS  # every kill landed mid-run

        finish = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert finish.returncode == 0, finish.stderr
        reference = generate(GenerateConfig(
            style="ego-centric", out=tmp_path / "clean", progress=False,
            options=SourceOptions(inputs=[str(seeds)], llm=LLMSettings(base_url=server.url, model="loopback"))))

    assert reference["records"] == SEEDS
    assert _corpus(tmp_path / "killed") == _corpus(tmp_path / "clean")
    raw = [json.loads(line) for line in (tmp_path / "killed" / "raw" / "shard-00000.ndjson").read_text().splitlines()]
    assert max(Counter(r["id"] for r in raw).values()) == 1  # nothing written twice, even in the raw log
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["inputs"] == {"done": SEEDS, "failed": 0, "skipped": 0, "failure_reasons": {},
                                  "skip_reasons": {}}


def test_one_writer_per_folder_and_one_corpus_per_folder(tmp_path):
    first = CorpusStore(tmp_path, {"style": "ego-centric", "source": "llm"})
    with pytest.raises(UsageError, match="another"):
        CorpusStore(tmp_path, {"style": "ego-centric", "source": "llm"})
    first.close()
    with pytest.raises(UsageError, match="already holds"):
        CorpusStore(tmp_path, {"style": "uplifting", "source": "llm"})


def test_a_torn_write_and_an_unrecorded_input_are_repaired(tmp_path):
    store = CorpusStore(tmp_path, {"style": "s", "source": "llm"})
    record = {"id": "1", "text": "A red kite.", "provenance": {"input": "seed:a"}}
    store.commit("seed:a", [record])
    store.close()
    shard = tmp_path / "raw" / "shard-00000.ndjson"
    orphan = {"id": "2", "text": "A blue boat.", "provenance": {"input": "seed:b"}}
    with open(shard, "a") as handle:  # seed:b's records landed, its manifest line never did
        handle.write(json.dumps(orphan) + "\n" + '{"id": "3", "te')
    store = CorpusStore(tmp_path, {"style": "s", "source": "llm"})
    assert store.done == {"seed:a"} and [r["id"] for r in store.raw_records()] == ["1"]
    store.close()
