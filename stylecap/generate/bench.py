"""`stylecap bench generate`: the concurrent generator against the paper's one-request-at-a-time
loop, both talking to the same loopback server with a fixed latency, in one run."""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stylecap.generate.llm import LLMSettings
from stylecap.generate.run import GenerateConfig, generate
from stylecap.generate.sources import SourceOptions
from stylecap.generate.styles import load_style


def bench_generate(requests: int = 2000, concurrency: int = 64, latency: float = 0.2,
                   sequential_requests: int = 25, out: Path | None = None) -> dict:
    """Requests per second of both ways, their ratio, and the settings; written to `out` as JSON."""
    captions = [f"Walker {i} leads a dog past shop {i * 7 + 3} on a bright street." for i in range(requests)]
    with _server(latency) as url, tempfile.TemporaryDirectory() as tmp:
        sequential = _sequential(url, captions[:sequential_requests])
        seeds = Path(tmp) / "seeds.txt"
        seeds.write_text("\n".join(captions))
        options = SourceOptions(inputs=[str(seeds)],
                                llm=LLMSettings(base_url=url, concurrency=concurrency, model="loopback"))
        started = time.perf_counter()
        summary = generate(GenerateConfig(style="ego-centric", out=Path(tmp) / "corpus", progress=False,
                                          options=options))
        seconds = time.perf_counter() - started
    concurrent = {"requests": summary["this_run"]["requests"], "seconds": round(seconds, 3),
                  "requests_per_second": round(summary["this_run"]["requests"] / seconds, 2),
                  "records": summary["records"], "failed": summary["this_run"]["failed"]}
    report = {
        "benchmark": "generate", "latency_seconds": latency, "concurrency": concurrency,
        "sequential": sequential, "concurrent": concurrent,
        "ratio": round(concurrent["requests_per_second"] / sequential["requests_per_second"], 2),
        "note": "concurrent: the whole `generate` run (requests, filters, writes); "
                "sequential: one blocking request at a time, as in the paper's script",
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    return report


def _sequential(url: str, captions: list[str]) -> dict:
    """The paper's loop: one blocking completion per caption, each waiting for the last."""
    import openai

    client = openai.OpenAI(api_key="no-key", base_url=url, max_retries=0)
    style = load_style("ego-centric")
    started = time.perf_counter()
    for caption in captions:
        client.chat.completions.create(model="loopback", max_tokens=64, temperature=1.0,
                                       messages=[{"role": "user", "content": style.render(caption)}])
    seconds = time.perf_counter() - started
    client.close()
    return {"requests": len(captions), "seconds": round(seconds, 3),
            "requests_per_second": round(len(captions) / seconds, 2)}


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
