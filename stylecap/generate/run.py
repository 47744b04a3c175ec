"""`generate`: inputs → found sentences → per-sentence filters → raw shards → corpus-level filters
→ corpus shards. Every finished input is saved before the next counts as done, so a run killed at
any moment resumes where it stopped."""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from stylecap.errors import ServiceError, UsageError
from stylecap.generate.filters import reject_reason
from stylecap.generate.judge import judge_corpus
from stylecap.generate.llm import ItemFailed, ItemSkipped
from stylecap.generate.progress import Tally, live
from stylecap.generate.sources import SOURCES, Found, Item, SourceOptions
from stylecap.generate.store import CorpusStore, finished_inputs
from stylecap.generate.styles import SOURCES as SOURCE_NAMES
from stylecap.generate.styles import Style, load_style


@dataclasses.dataclass
class GenerateConfig:
    style: str
    source: str | None = None  # None: the style's default
    out: Path | None = None  # None: corpora/<style> in the current folder
    prompt: Path | None = None  # replaces the style's template
    limit: int | None = None  # only the first N inputs
    dry_run: bool = False
    progress: bool = True
    options: SourceOptions = dataclasses.field(default_factory=SourceOptions)


def generate(config: GenerateConfig) -> dict:
    """Run (or resume) a generation; returns the summary also written to DIR/manifest.json, or the
    estimate of the work left when `dry_run`."""
    style = load_style(config.style, config.prompt)
    source_name = config.source or style.source
    if source_name not in SOURCE_NAMES:
        raise UsageError(f"unknown source {source_name!r}", fix=f"use one of {', '.join(SOURCE_NAMES)}")
    out = Path(config.out) if config.out else Path("corpora") / style.name
    return asyncio.run(_generate(config, style, source_name, out))


async def _generate(config: GenerateConfig, style: Style, source_name: str, out: Path) -> dict:
    llm_price = config.options.llm.price() if source_name == "llm" else (0.0, 0.0)
    tally = Tally(price=llm_price)
    source = SOURCES[source_name](style, config.options, tally)
    try:
        items = (await source.items())[:config.limit]
        if config.dry_run:
            done = finished_inputs(out)
            return {"dry_run": True, "style": style.name, "source": source_name, "out": str(out),
                    **source.estimate([item for item in items if item.key not in done])}
        if source_name == "llm" and config.options.provider != "local":
            config.options.llm.endpoint()  # no LLM to ask is one line before the corpus folder is made
        store = CorpusStore(out, {"style": style.name, "source": source_name})
        try:
            pending = [item for item in items if item.key not in store.done]
            tally.total = len(pending)
            source.open(retry_budget=_retry_budget(config, len(pending)))
            failure = None
            try:
                with live(tally, config.progress) as tick:
                    await _work(pending, source, store, style, source_name, tally, tick)
            except ServiceError as exc:
                failure = exc  # save what was done first: the corpus is still useful
            summary = _finish(store, config, style, source_name, tally)
            if failure:
                raise failure
            return summary
        finally:
            store.close()
    finally:
        await source.aclose()


def _retry_budget(config: GenerateConfig, pending: int) -> int:
    budget = config.options.llm.retry_budget
    return budget if budget is not None else 100 + pending // 4


async def _work(pending: list[Item], source, store: CorpusStore, style: Style, source_name: str,
                tally: Tally, tick) -> None:
    queue = iter(pending)
    stopping = False

    async def worker() -> None:
        nonlocal stopping
        for item in queue:  # one iterator shared by all workers: each item is taken once
            if stopping:
                return
            try:
                found = await source.produce(item)
                # Filtered and written as they come: a book's sentences are a stream, never a list.
                written = store.commit(item.key, _accept(item, found, style, source_name, tally))
            except ItemSkipped as exc:  # permanent: recorded as finished, never retried
                store.commit(item.key, [], skipped=str(exc))
                tally.skipped += 1
                tally.skips[str(exc)] += 1
            except ItemFailed as exc:
                store.commit(item.key, [], failure=str(exc))
                tally.failed += 1
                tally.failures[str(exc)] += 1
            except BaseException:
                stopping = True  # the others finish what they hold, then stop
                raise
            else:
                tally.done += 1
                tally.records += written
            tick()

    workers = max(1, min(source.concurrency, len(pending)))
    results = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]


def _accept(item: Item, found: Iterable[Found], style: Style, source_name: str, tally: Tally) -> Iterator[dict]:
    """Records for the sentences of one input that pass the per-sentence filters, as they come."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for index, candidate in enumerate(found):
        reason = reject_reason(candidate.text, style.filters, seed=candidate.seed,
                               visual=candidate.visual, names=candidate.names)
        if reason:
            tally.rejected[reason] += 1
            continue
        yield {"id": record_id(style.name, item.key, index), "style": style.name,
               "text": candidate.text, "source": source_name,
               "provenance": {"input": item.key, **candidate.provenance}, "time": now}


def record_id(style: str, key: str, index: int) -> str:
    """Stable across runs: the same input and position always name the same record."""
    return hashlib.blake2b(f"{style}\n{key}\n{index}".encode(), digest_size=10).hexdigest()


def _finish(store: CorpusStore, config: GenerateConfig, style: Style, source_name: str, tally: Tally) -> dict:
    judged = judge_corpus(store, style.filters)  # only the raw records no earlier run judged
    settings = {"prompt": style.prompt_id} if source_name == "llm" else {}
    if source_name == "llm":
        llm = config.options.llm
        local = config.options.provider == "local"  # no server: the model ran in this process
        settings.update(provider=config.options.provider, model=llm.model,
                        **({} if local else {"base_url": llm.public_base_url()}), max_tokens=llm.max_tokens,
                        temperature=llm.temperature, samples=config.options.samples)
    failures: dict[str, int] = {}
    for reason in store.failed.values():
        failures[reason] = failures.get(reason, 0) + 1
    skips: dict[str, int] = {}
    for reason in store.skipped.values():
        skips[reason] = skips.get(reason, 0) + 1
    summary = {
        "style": style.name, "source": source_name, "settings": settings,
        "inputs": {"done": len(store.done) - len(store.skipped), "failed": len(store.failed),
                   "skipped": len(store.skipped), "failure_reasons": failures, "skip_reasons": skips},
        "raw_records": judged.raw_records, "dropped": judged.dropped,
        "this_run": {
            "inputs": tally.total, "done": tally.done, "failed": tally.failed, "skipped": tally.skipped,
            "retried": tally.retried,
            "requests": tally.requests, "seconds": round(tally.seconds, 2),
            "requests_per_second": round(tally.requests / max(tally.seconds, 1e-9), 2),
            "prompt_tokens": tally.tokens_in, "completion_tokens": tally.tokens_out,
            "cost": None if tally.cost is None else round(tally.cost, 6),
            "records": tally.records, "rejected": dict(tally.rejected),
            "corpus_pass": {"judged": judged.judged_now, "seconds": judged.seconds,
                            "judged_anew": judged.rejudged},
        },
        "shards": judged.shards, "records": judged.records,
    }
    store.write_manifest(summary)
    return {**summary, "out": str(store.folder)}
