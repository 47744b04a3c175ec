"""`stylecap generate`, `stylecap corpus stats` and `stylecap bench generate`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from stylecap.cli import app, err_console
from stylecap.cli.bench import bench_app
from stylecap.errors import PartialRun, StylecapError


def _escape_for_terminal(exc: StylecapError) -> None:
    """Paths and URLs in an error come from file names, URL lists and web pages: their control
    characters must reach the terminal as visible escapes, not as escape sequences it obeys."""
    from stylecap.errors import printable

    exc.what, exc.where, exc.fix = (part and printable(part) for part in (exc.what, exc.where, exc.fix))


corpus_app = typer.Typer(help="Inspect style corpora.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@app.command("generate")
def generate_command(
    style: str = typer.Option(..., help="ego-centric, uplifting, character-based, reviews, or a style .toml file"),
    source: Optional[str] = typer.Option(None, help="llm | books | web | reviews (default: the style's)"),
    input: list[str] = typer.Option([], "--input", "-i", help="Seed captions or subjects (llm), book "
                                    "files/URLs, page URLs/URL files/sitemaps, review tables. Repeatable."),
    subject: list[str] = typer.Option([], help="A subject for free-mode prompts (repeatable)"),
    out: Optional[Path] = typer.Option(None, help="Corpus folder (default: corpora/<style>)"),
    prompt: Optional[Path] = typer.Option(None, help="Prompt template replacing the style's"),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N inputs"),
    samples: int = typer.Option(1, min=1, help="LLM requests per seed or subject"),
    provider: str = typer.Option("openai", help="openai: any OpenAI-compatible server; local: a transformers "
                                 "model generating in this process (--model FOLDER, batches of --concurrency)"),
    model: str = typer.Option("gpt-4o-mini", help="Chat model name; with --provider local a transformers "
                              "folder, model hub name or built-in tiny LM (tiny-gpt2)"),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server, e.g. "
                                           "http://localhost:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI "
                                           "with $OPENAI_API_KEY)"),
    api_key_env: Optional[str] = typer.Option(None, help="Environment variable holding the key for the "
                                              "server (OPENAI_API_KEY goes only to api.openai.com unasked)"),
    api_key: Optional[str] = typer.Option(None, help="Key for the server (visible to other users in the "
                                          "process list: prefer --api-key-env)"),
    concurrency: int = typer.Option(16, min=1, help="Requests (or pages) in flight; prompts per batch "
                                    "with --provider local"),
    rpm: Optional[float] = typer.Option(None, help="Request limit per minute"),
    tpm: Optional[float] = typer.Option(None, help="Token limit per minute (prompt + max reply)"),
    max_tokens: int = typer.Option(64, min=1, help="Reply length limit"),
    temperature: float = typer.Option(1.0),
    timeout: float = typer.Option(60.0, help="Seconds per request or page"),
    max_attempts: int = typer.Option(6, min=1, help="Attempts per input before it counts as failed"),
    backoff: float = typer.Option(0.5, min=0.0, help="Longest wait before a first retry, in seconds; "
                                  "doubles with each attempt (with jitter)"),
    retry_budget: Optional[int] = typer.Option(None, min=0, help="Retries in the whole run "
                                               "(default: 100 + a quarter of the inputs)"),
    price_in: Optional[float] = typer.Option(None, help="Dollars per million prompt tokens"),
    price_out: Optional[float] = typer.Option(None, help="Dollars per million completion tokens"),
    dry_run: bool = typer.Option(False, help="Estimate requests, tokens and cost, then stop"),
    characters: list[str] = typer.Option([], help="Character names (books, web; default: frequent names)"),
    text_column: Optional[str] = typer.Option(None, help="Column of seed captions or review text"),
    rating_column: Optional[str] = typer.Option(None, help="Column of review ratings"),
    min_rating: Optional[float] = typer.Option(None, help="Keep reviews rated at least this"),
    per_host_rate: float = typer.Option(1.0, help="Web: requests per second to one host"),
    max_bytes: int = typer.Option(5_000_000, help="Web: largest page read"),
    progress: bool = typer.Option(True, help="Show live progress on a terminal"),
) -> None:
    """Build a corpus of sentences in a style. Run the same command again to resume."""
    from stylecap.generate import GenerateConfig, LLMSettings, SourceOptions, WebSettings, generate
    from stylecap.generate.report import show_estimate, show_summary

    llm = LLMSettings(model=model, base_url=base_url, api_key=api_key, api_key_env=api_key_env,
                      concurrency=concurrency, requests_per_minute=rpm,
                      tokens_per_minute=tpm, max_tokens=max_tokens, temperature=temperature,
                      timeout=timeout, max_attempts=max_attempts, backoff=backoff, retry_budget=retry_budget,
                      price_in=price_in, price_out=price_out)
    web = WebSettings(timeout=timeout, max_bytes=max_bytes, per_host_rate=per_host_rate, concurrency=concurrency)
    options = SourceOptions(inputs=input, subjects=subject, samples=samples, text_column=text_column,
                            rating_column=rating_column, min_rating=min_rating, characters=characters,
                            llm=llm, provider=provider, web=web,
                            notify=lambda line: err_console.print(line, markup=False))
    try:
        result = generate(GenerateConfig(style=style, source=source, out=out, prompt=prompt, limit=limit,
                                         dry_run=dry_run, progress=progress, options=options))
    except StylecapError as exc:
        _escape_for_terminal(exc)
        raise
    if dry_run:
        show_estimate(result, err_console)
        return
    show_summary(result, err_console)
    if result["inputs"]["failed"]:
        raise PartialRun(f"{result['inputs']['failed']} inputs failed (reasons above)",
                         fix="run the same command again to retry them")


@corpus_app.command("stats")
def stats_command(
    folder: Path = typer.Argument(..., help="A corpus folder"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table"),
) -> None:
    """Counts, lengths, top n-grams, duplicate rate and sources of a corpus."""
    from stylecap.generate.report import show_stats
    from stylecap.generate.stats import corpus_stats

    stats = corpus_stats(folder)
    if as_json:
        import json

        typer.echo(json.dumps(stats, indent=1))
    else:
        from rich.console import Console

        show_stats(stats, Console())


@bench_app.command("generate")
def bench_generate_command(
    requests: int = typer.Option(2000, min=1, help="Requests for the concurrent generator"),
    sequential_requests: int = typer.Option(25, min=1, help="Requests for the sequential loop"),
    concurrency: int = typer.Option(64, min=1),
    latency: float = typer.Option(0.2, help="Seconds the loopback server takes per request"),
    out: Path = typer.Option(Path("runs/bench/generate.json"), help="JSON report"),
) -> None:
    """Concurrent generator vs the paper's sequential loop against a loopback server."""
    from stylecap.experiments.generate_speed import bench_generate

    bench_generate(requests=requests, concurrency=concurrency, latency=latency,
                   sequential_requests=sequential_requests, out=out)
    typer.echo(f"report: {out}")
