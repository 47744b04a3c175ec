"""`stylecap bench generate`: the concurrent generator against the paper's one-request-at-a-time
loop, both talking to the same loopback server with a fixed latency, in one run (report shape:
:mod:`stylecap.experiments.report`)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from pathlib import Path

import openai

from stylecap.experiments.report import BenchReport, measure
from stylecap.generate.llm import LLMSettings
from stylecap.generate.run import GenerateConfig, generate
from stylecap.generate.sources import SourceOptions
from stylecap.generate.styles import load_style


def bench_generate(requests: int = 2000, concurrency: int = 64, latency: float = 0.2,
                   sequential_requests: int = 25, out: Path | None = None, show: bool = True) -> BenchReport:
    """Requests/s of the whole concurrent `generate` run against the paper's sequential loop."""
    captions = [f"Walker {i} leads a dog past shop {i * 7 + 3} on a bright street." for i in range(requests)]
    with _server(latency) as url, tempfile.TemporaryDirectory() as tmp:
        reference = measure("reference (one request at a time)", lambda: _sequential(url, captions[:sequential_requests]))
        summary: dict = {}
        ours = measure("stylecap generate", lambda: _concurrent(url, captions, concurrency, Path(tmp), summary))
    report = BenchReport("generate", "requests", ours, reference, {
        "latency_seconds": latency, "concurrency": concurrency, "records": summary["records"],
        "failed": summary["this_run"]["failed"],
        "note": "ours: the whole `generate` run (requests, filters, writes); reference: one blocking request "
                "at a time, as in the paper's script"})
    if show:
        report.show()
    if out is not None:
        report.save(out)
    return report


def _concurrent(url: str, captions: list[str], concurrency: int, tmp: Path, summary: dict) -> int:
    seeds = tmp / "seeds.txt"
    seeds.write_text("\n".join(captions))
    options = SourceOptions(inputs=[str(seeds)], llm=LLMSettings(base_url=url, concurrency=concurrency, model="loopback"))
    summary.update(generate(GenerateConfig(style="ego-centric", out=tmp / "corpus", progress=False, options=options)))
    return summary["this_run"]["requests"]


def _sequential(url: str, captions: list[str]) -> int:
    """The paper's loop: one blocking completion per caption, each waiting for the last."""
    client = openai.OpenAI(api_key="no-key", base_url=url, max_retries=0)
    style = load_style("ego-centric")
    for caption in captions:
        client.chat.completions.create(model="loopback", max_tokens=64, temperature=1.0,
                                       messages=[{"role": "user", "content": style.render(caption)}])
    client.close()
    return len(captions)


@contextlib.contextmanager
def _server(latency: float):
    """The loopback server in its own process, so it does not share the generator's CPU time."""
    process = subprocess.Popen([sys.executable, "-m", "stylecap.generate.loopback", "--latency", str(latency)],
                               stdout=subprocess.PIPE, text=True)
    try:
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(10)
