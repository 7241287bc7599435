"""`kimidocs extract` through the real console script, on corpus files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import CORPUS

KIMIDOCS = Path(sys.executable).parent / "kimidocs"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    assert KIMIDOCS.is_file(), f"console script missing at {KIMIDOCS} (pip install -e .)"
    return subprocess.run([str(KIMIDOCS), "extract", *args], capture_output=True, text=True, timeout=120)


def test_json_lines_exact_keys_and_exit_code_1_on_any_failure(corpus) -> None:
    files = [
        CORPUS / "pdf/crazyones.pdf",
        CORPUS / "bad/libreoffice-writer-password.pdf",
        CORPUS / "bad/docx-with-pdf-extension.pdf",
        CORPUS / "bad/testPDF_bad_page_303226.pdf",
    ]
    proc = run(*map(str, files), "--json")
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [rec["path"] for rec in lines] == [str(f) for f in files]
    ok, encrypted, renamed, bad_pages = lines
    assert ok == {
        "path": str(files[0]),
        "ok": True,
        "kind": "pdf",
        "pages": 1,
        "chars": 900,
        "warnings": [],
    }  # NFKC: 2 ligatures
    assert set(encrypted) == {"path", "ok", "error_type", "message"}
    assert encrypted["ok"] is False and encrypted["error_type"] == "EncryptedDocument"
    assert "needs a password" in encrypted["message"]
    assert renamed["ok"] and renamed["kind"] == "docx"
    assert bad_pages["ok"] and bad_pages["pages"] == 19
    assert any("startxref" in w for w in bad_pages["warnings"])  # pdfium reads all 19; the xref repair shows


def test_plain_lines_and_exit_code_0_when_all_ok(corpus) -> None:
    proc = run(str(CORPUS / "docx/footnotes.docx"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{CORPUS / 'docx/footnotes.docx'}\tdocx\t1 page\t50 chars\t0 warnings\n"


def test_text_flag_prints_pages(corpus) -> None:
    proc = run(str(CORPUS / "docx/footnotes.docx"), "--text")
    assert proc.returncode == 0
    assert (
        "--- page 1 (paragraphs 1-2) ---\nEto ochen prostoy[^1] text so snoskoy\n[^1]: snoska" in proc.stdout
    )


def test_timeout_reports_extraction_timeout(corpus) -> None:
    proc = run(str(CORPUS / "pdf/The-Art-of-Public-Speaking.pdf"), "--json", "--timeout", "0.2")
    assert proc.returncode == 1
    rec = json.loads(proc.stdout)
    assert rec["ok"] is False and rec["error_type"] == "ExtractionTimeout"
