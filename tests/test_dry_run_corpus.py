"""`analyze --dry-run` over the whole corpus: every file planned with a cost, or refused with a typed
reason before any money is spent -- and not one chat call made."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import db_rows, manifest_rows, run_pipeline

# Files a correct pipeline refuses, and the typed reason (everything else must be planned). With the
# default PDF engine (pdfium) the vertical Japanese jo.pdf is real text and issue-1113 (no startxref) is
# recovered; with KIMIDOCS_PDF_ENGINE=pypdf the first is LowTextQuality and the second CorruptDocument.
REFUSED = {
    "bad/empty.pdf": "EmptyDocument",
    "bad/libreoffice-writer-password.pdf": "EncryptedDocument",
    "bad/multi_page-truncated.pdf": "CorruptDocument",
    "bad/fake-doc-binary-with-docx-extension.docx": "UnsupportedFormat",
    "bad/testWORD_protected_passtika.docx": "EncryptedDocument",
    "bad/testWORD_truncated.docx": "CorruptDocument",
    # only "2021 3 31" is extractable: too little text per page to be worth a call
    "bad/malformed-from-issue-932.pdf": "LowTextQuality",
}


def test_dry_run_plans_or_refuses_every_corpus_file(corpus: Path, tmp_path: Path, kimi_emulator) -> None:
    db = tmp_path / "k.duckdb"
    # The 934-page x2 PDF (~40 s of pypdf, ~4 s of pdfium) is planned in test_planning from the
    # session's extraction cache.
    report = run_pipeline(
        corpus,
        db,
        kimi_emulator,
        dry_run=True,
        include=("*.pdf", "*.docx"),
        exclude=("public-speaking-x2.pdf",),
    )
    outcomes = {os.path.relpath(o.path, corpus): o for o in report.outcomes}
    expected = {r["file"] for r in manifest_rows() if r["kind"] != "groundtruth"} - {
        "pdf/public-speaking-x2.pdf"
    }
    assert set(outcomes) == expected
    for rel, outcome in sorted(outcomes.items()):
        if rel in REFUSED:
            assert (outcome.status, outcome.error_type) == ("failed", REFUSED[rel]), (rel, outcome)
            assert rel.split("/")[-1] in (outcome.message or "")  # the message names the file
        else:
            assert outcome.status == "planned", (rel, outcome)
            assert outcome.cost_usd_est and outcome.cost_usd_est > 0, rel
            assert outcome.coverage == 1.0, rel
    assert report.cost_usd_est > 0
    assert not kimi_emulator.requests("/chat/completions")
    # every refusal is recorded for analysts, with its type
    failures = dict(db_rows(db, "SELECT path, error_type FROM failures"))
    assert {os.path.relpath(p, corpus): t for p, t in failures.items()} == REFUSED
