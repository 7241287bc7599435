"""A realistic store filled through the Store API with real corpus documents (shared by the store tests).

Documents come from ../shared/corpus through `extractors.extract` when it is available, else
through pypdf / python-docx directly (same pages, no cleverness). Calls and summaries look like
what the pipeline writes: tokens, cached share, prices from the model table, citations that
point at real pages with evidence quoted from them, dates and amounts written in mixed styles.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from extractors.document import Document, Page
from kimidocs.core.models import get_model
from kimidocs.core.records import CallRecord, FileRecord, RunRecord, RunTotals, Usage
from kimidocs.core.results import Summary
from kimidocs.store import Store, SummaryRow

CORPUS_FILES = (
    "pdf/crazyones.pdf",
    "pdf/multi_page.pdf",
    "pdf/normal_4pages.pdf",
    "pdf/code_and_formula.pdf",
    "docx/word_sample.docx",
    "docx/lorem_ipsum.docx",
)
FAILED_FILE = "bad/empty.pdf"
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
MODEL = "kimi-k2.5"


def load_document(corpus: Path, rel: str) -> Document:
    """One corpus file as a Document, by the project's extractor when it exists."""
    path = corpus / rel
    try:
        from extractors import extract  # type: ignore[attr-defined]
    except ImportError:
        extract = None
    if extract is not None:
        return extract(str(path))
    data = path.read_bytes()
    if rel.endswith(".pdf"):
        from pypdf import PdfReader

        texts = [p.extract_text() or "" for p in PdfReader(path).pages]
        kind = "pdf"
    else:
        import docx

        texts = ["\n".join(p.text for p in docx.Document(str(path)).paragraphs)]
        kind = "docx"
    return Document(
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        kind=kind,
        size=len(data),
        pages=tuple(Page(i, t) for i, t in enumerate(texts, start=1)),
        extractor_version="test-fallback",
    )


def _cost(usage: Usage) -> float:
    m = get_model(MODEL)
    return (
        usage.miss_tokens * m.price_cache_miss
        + usage.cached_tokens * m.price_cache_hit
        + usage.completion_tokens * m.price_output
    ) / 1e6


def _first_sentence(text: str) -> str:
    words = text.split()
    return " ".join(words[:8]) or "(empty page)"


def _summary(doc: Document, n: int) -> tuple[Summary, str]:
    """A plausible model answer citing the document's own pages, dates and amounts in mixed styles."""
    cited = [p for p in doc.pages if p.text.strip()] or list(doc.pages)
    data = {
        "title": doc.title or Path(doc.path).stem.replace("_", " "),
        "document_type": "report" if doc.kind == "pdf" else "memo",
        "language": "ko" if "normal_4pages" in doc.path else "en",
        "summary": f"{Path(doc.path).name}: " + _first_sentence(cited[0].text),
        "key_points": [
            {"point": _first_sentence(p.text), "pages": [p.number], "evidence": " ".join(p.text.split()[:5])}
            for p in cited[:3]
        ],
        "entities": [{"name": "Acme Corp", "type": "organization"}, {"name": "Jane Doe", "type": "person"}],
        "dates": [
            {
                "date": ["2020-01-05", "January 5, 2020", "5 Jan 2020", "2021-03"][n % 4],
                "what": "signed",
                "pages": [cited[0].number],
            },
            {
                "date": "Q3 2021",
                "what": "review (not a date the store can type)",
                "pages": [cited[-1].number],
            },
        ],
        "amounts": [
            {
                "value": ["$1,200.50", "USD 5 million", "€3,5", "1.2k"][n % 4],
                "what": "fee",
                "pages": [cited[0].number],
            },
            {"value": 25000 * (n + 1), "currency": "usd", "what": "budget", "pages": [cited[-1].number]},
        ],
    }
    raw = json.dumps(data, ensure_ascii=False)
    return Summary.model_validate(data), raw


@dataclass(frozen=True)
class Filled:
    store: Store
    run_ids: tuple[str, ...]
    doc_ids: tuple[str, ...]
    folder: str


def fill(db: Path, corpus: Path, tag: str = "0") -> Filled:
    """Two runs over the same folder: the first analyses everything, the second finds it unchanged.

    Filling again with another `tag` repeats the same writes under new run ids (a forced rerun).
    """
    store = Store(db)
    store.migrate()
    folder = str(corpus)
    docs = [load_document(corpus, rel) for rel in CORPUS_FILES]
    run1 = f"run-{tag}001"
    store.start_run(RunRecord(run1, T0, folder, "summary", MODEL, "emulator", flow_run_id="flow-1"))
    for n, doc in enumerate(docs):
        at = T0 + timedelta(minutes=n)
        store.save_document(
            doc,
            FileRecord(doc.path, doc.sha256, doc.size, at),
            tokens_est=doc.chars // 4,
            page_tokens=[p.chars // 4 for p in doc.pages],
        )
        stages = (
            [("single", None, None)]
            if len(doc.pages) < 4
            else [("map", 0, 0), ("map", 1, 0), ("reduce", None, 1)]
        )
        for i, (stage, chunk, level) in enumerate(stages):
            prompt = 1_200 + doc.chars // 4
            usage = Usage(prompt, 1_024 if i else 0, 350)
            store.save_call(
                CallRecord(
                    call_id=f"{run1}-{n}-{i}",
                    run_id=run1,
                    doc_id=doc.sha256,
                    stage=stage,
                    request_key=hashlib.sha256(f"{doc.sha256}:{stage}:{chunk}".encode()).hexdigest(),
                    model=MODEL,
                    backend="emulator",
                    chunk_index=chunk,
                    level=level,
                    prompt_tokens_est=prompt - 20,
                    usage=usage,
                    cost_usd=_cost(usage),
                    latency_ms=900.0 + 10 * i,
                    ttft_ms=200.0,
                    finish_reason="stop",
                    http_status=200,
                    response='{"summary": "..."}',
                    started_at=at + timedelta(seconds=i),
                )
            )
        summary, raw = _summary(doc, n)
        store.save_summary(
            SummaryRow(
                doc.sha256,
                "summary",
                "v1",
                MODEL,
                run1,
                "emulator",
                summary,
                1.0,
                len(doc.pages),
                len(doc.pages),
                raw,
                at + timedelta(seconds=30),
            )
        )
    bad = corpus / FAILED_FILE
    bad_id = hashlib.sha256(bad.read_bytes()).hexdigest()
    store.save_failed_file(run1, str(bad), bad_id, 0, T0, "EmptyDocument", f"{bad}: zero-byte file")
    store.finish_run(run1, RunTotals("completed", documents_ok=len(docs), documents_failed=1, calls=10))
    run2 = f"run-{tag}002"
    store.start_run(RunRecord(run2, T0 + timedelta(days=1), folder, "summary", MODEL, "emulator"))
    for doc in docs:
        store.touch_file(FileRecord(doc.path, doc.sha256, doc.size, T0))
    store.finish_run(run2, RunTotals("completed", documents_skipped=len(docs)))
    store.close()
    return Filled(store, (run1, run2), tuple(d.sha256 for d in docs), folder)


def test_fill_writes_what_the_other_tests_rely_on(tmp_path: Path, corpus: Path) -> None:
    filled = fill(tmp_path / "k.duckdb", corpus)
    counts = filled.store.query(
        "SELECT (SELECT count(*) FROM documents WHERE status = 'ok'), (SELECT count(*) FROM summaries), "
        "(SELECT count(*) FROM failures), (SELECT count(*) FROM pages), (SELECT count(*) FROM runs)"
    ).rows[0]
    assert counts[:3] == (len(CORPUS_FILES), len(CORPUS_FILES), 1)
    assert counts[3] >= len(CORPUS_FILES) + 6  # multi-page PDFs
    assert counts[4] == 2
