"""The PDF engines (issue 14.4): the switch, the "auto" fallback rule, progress and bounds with pdfium.

The manifest rows and ground-truth floors for both engines are in test_extract_manifest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pypdfium2
import pytest
from conftest import CORPUS
from hostile import stuck_pdf

import extractors
from extractors import (
    CorruptDocument,
    EmptyDocument,
    EncryptedDocument,
    ExtractionTimeout,
    Limits,
    NoTextLayer,
    pdf_engine,
    pdf_pdfium,
)
from extractors.pdf_pdfium import normalise, pdf_date

CRAZY = CORPUS / "pdf/crazyones.pdf"
ARABIC = CORPUS / "pdf/right_to_left_01.pdf"


def _version(engine: str) -> str:
    return f"{extractors.EXTRACTOR_VERSION}+{engine}"


# --- the switch ---------------------------------------------------------------------------------


def test_limits_name_the_engine_and_refuse_an_unknown_one() -> None:
    assert Limits().pdf_engine == "auto"
    with pytest.raises(ValueError, match="auto, pdfium, pypdf"):
        Limits(pdf_engine="mupdf")


@pytest.mark.parametrize("engine", ["pdfium", "pypdf"])
def test_each_engine_alone_marks_the_version(engine: str) -> None:
    doc = extractors.extract(CRAZY, limits=Limits(pdf_engine=engine))
    assert doc.extractor_version == _version(engine)
    assert "heres to the crazy ones" in " ".join(doc.text.lower().split())
    assert not doc.warnings


def test_auto_reads_with_pdfium() -> None:
    doc = extractors.extract(CRAZY)
    assert doc.extractor_version == _version("pdfium")
    assert doc == extractors.extract(CRAZY, limits=Limits(pdf_engine="pdfium"))


def test_docx_and_text_carry_no_engine(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("plain words\n")
    assert extractors.extract(note).extractor_version == extractors.EXTRACTOR_VERSION
    docx = extractors.extract(CORPUS / "bad/docx-with-pdf-extension.pdf")  # sniffed as DOCX
    assert docx.kind == "docx" and docx.extractor_version == extractors.EXTRACTOR_VERSION


def test_the_setting_is_validated_and_reaches_the_limits() -> None:
    from kimidocs.run.pipeline import extraction_limits
    from kimidocs.run.settings import ConfigError, Settings, load_settings

    assert Settings(_env_file=None).pdf_engine == "auto"
    settings = Settings(KIMIDOCS_PDF_ENGINE=" PyPDF ", _env_file=None)
    assert settings.pdf_engine == "pypdf"
    assert extraction_limits(settings).pdf_engine == "pypdf"
    with pytest.raises(ConfigError, match="KIMIDOCS_PDF_ENGINE: unknown PDF engine 'fast'"):
        load_settings(KIMIDOCS_PDF_ENGINE="fast")


# --- the fallback rule ----------------------------------------------------------------------------


def test_a_file_pdfium_refuses_is_read_by_pypdf(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise pypdfium2.PdfiumError("Failed to load document (PDFium: Data format error).", err_code=3)

    monkeypatch.setattr(pdf_pdfium.pdfium, "PdfDocument", refuse)
    doc = extractors.extract(CRAZY)
    assert doc.extractor_version == _version("pypdf")
    assert doc.warnings[0].startswith("pdf engine: pdfium could not read the file (cannot read the PDF")
    assert doc.warnings[0].endswith("; text from pypdf")
    with pytest.raises(CorruptDocument, match="pdfium"):  # chosen alone, pdfium's refusal is the error
        extractors.extract(CRAZY, limits=Limits(pdf_engine="pdfium"))


def test_a_pdfium_failure_on_every_page_falls_back_to_pypdf(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: object) -> str:
        raise pypdfium2.PdfiumError("Failed to load text page.")

    monkeypatch.setattr(pypdfium2.PdfTextPage, "get_text_range", broken)
    with pytest.raises(CorruptDocument, match=r"no page could be read \(page 1: PdfiumError"):
        extractors.extract(CRAZY, limits=Limits(pdf_engine="pdfium"))
    doc = extractors.extract(CRAZY)
    assert doc.extractor_version == _version("pypdf") and doc.chars > 800
    assert "pdfium could not read the file (no page could be read" in doc.warnings[0]


def test_a_pdfium_failure_on_one_page_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pypdfium2.PdfTextPage.get_text_range
    calls = []

    def second_page_breaks(self: pypdfium2.PdfTextPage) -> str:
        calls.append(1)
        if len(calls) == 2:
            raise pypdfium2.PdfiumError("Failed to load text page.")
        return real(self)

    monkeypatch.setattr(pypdfium2.PdfTextPage, "get_text_range", second_page_breaks)
    doc = extractors.extract(CORPUS / "pdf/multi_page.pdf")
    assert doc.extractor_version == _version("pdfium")
    assert [bool(p.text.strip()) for p in doc.pages] == [True, False, True, True, True]
    assert doc.warnings[0] == "page 2: PdfiumError: Failed to load text page.; text skipped"
    assert all(w.startswith("pypdf: ") for w in doc.warnings[1:])  # its repairs, as with pypdf alone


def test_no_text_from_pdfium_but_text_from_pypdf_uses_pypdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_pdfium, "normalise", lambda raw: "")  # pdfium sees blank pages
    with pytest.raises(EmptyDocument):
        extractors.extract(CRAZY, limits=Limits(pdf_engine="pdfium"))
    doc = extractors.extract(CRAZY)
    assert doc.extractor_version == _version("pypdf")
    assert doc.warnings[0] == "pdf engine: pdfium found no text on any page and pypdf did; text from pypdf"


def test_no_text_from_either_engine_keeps_pdfiums_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    scanned = CORPUS / "pdf/testOCR.pdf"
    with pytest.raises(NoTextLayer, match="needs OCR"):
        extractors.extract(scanned)
    doc = extractors.extract(scanned, keep_images=True)
    assert doc.extractor_version == _version("pdfium") and not doc.warnings
    (image,) = doc.pages[0].images  # the rendered page
    assert image.mime == "image/jpeg" and image.data[:3] == b"\xff\xd8\xff"


def test_mostly_arabic_text_is_read_by_pypdf() -> None:
    """right_to_left_01.pdf: pdfium reverses lam-alef ligatures ("المشكالت" for "المشكلات")."""
    alone = extractors.extract(ARABIC, limits=Limits(pdf_engine="pdfium"))
    assert "المشكالت" in alone.text
    assert pdf_engine.arabic_share(_extracted(alone)) > pdf_engine.RTL_SHARE
    doc = extractors.extract(ARABIC)
    assert doc.extractor_version == _version("pypdf")
    assert "المشكلات" in doc.text
    assert doc.warnings[0].startswith("pdf engine: ") and "Arabic script" in doc.warnings[0]


def test_a_password_ends_the_file_without_asking_pypdf(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("pypdf was asked")

    monkeypatch.setattr(pdf_engine, "_pypdf", never)
    with pytest.raises(EncryptedDocument, match="needs a password"):
        extractors.extract(CORPUS / "bad/libreoffice-writer-password.pdf")
    doc = extractors.extract(CORPUS / "pdf/r6-empty-password.pdf")  # AES-256, empty user password
    assert "pdf encryption test" in doc.text.lower()


def _extracted(doc: extractors.Document):  # -> Extracted
    from extractors.paging import Extracted

    return Extracted(doc.pages)


# --- progress and bounds --------------------------------------------------------------------------


def test_pdfium_reports_progress_page_by_page() -> None:
    here: list[tuple[int, int]] = []
    extractors.extract(
        CORPUS / "pdf/multi_page.pdf",
        limits=Limits(pdf_engine="pdfium"),
        on_progress=lambda d, t: here.append((d, t)),
    )
    assert here == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    seen: list[tuple[int, int]] = []
    doc = extractors.extract(
        CORPUS / "pdf/redp5110_sampled.pdf",
        limits=Limits(timeout_s=60),
        on_progress=lambda d, t: seen.append((d, t)),
    )
    assert doc.extractor_version == _version("pdfium")
    assert seen[-1] == (18, 18) and [d for d, _t in seen] == sorted({d for d, _t in seen})


def test_a_stuck_pdfium_page_is_killed_in_its_worker(tmp_path: Path) -> None:
    """pdfium is C: nothing in its process can interrupt it. Page 2 is 10^11 operators (hostile.stuck_pdf:
    hours on any machine, 3 KB of file), page 1 one line (milliseconds): under a 2 s bound the worker is
    killed after page 1 on a fast machine and on a slow one, and the pool goes on (no memory
    cap here: pdfium's own memory for such a page is not what this test is about)."""
    stuck = stuck_pdf(tmp_path / "stuck.pdf", honest_pages=1)
    with pytest.raises(ExtractionTimeout, match=r"no page finished for 2 s \(after 1 of 2 pages\)"):
        extractors.extract(stuck, limits=Limits(timeout_s=2.0, pdf_engine="pdfium", memory_budget=None))
    assert extractors.extract(CRAZY, limits=Limits(timeout_s=60)).extractor_version == _version("pdfium")


def test_pdfium_keeps_the_image_counts_and_metadata_of_pypdf() -> None:
    for rel in (
        "pdf/Seige_of_Vicksburg_Sample_OCR.pdf",
        "pdf/normal_4pages.pdf",
        "bad/zen_of_python_corrupted.pdf",
    ):
        fast = extractors.extract(CORPUS / rel, limits=Limits(pdf_engine="pdfium"))
        ref = extractors.extract(CORPUS / rel, limits=Limits(pdf_engine="pypdf"))
        assert [p.image_count for p in fast.pages] == [p.image_count for p in ref.pages], rel
        assert (fast.title, fast.author, fast.created) == (ref.title, ref.author, ref.created), rel


# --- pdfium's text and dates ----------------------------------------------------------------------


def test_pdfium_text_is_normalised() -> None:
    raw = "line one\r\nperi\ufffeodic r\x01 bullet\rend\tok\x0c"
    assert normalise(raw) == "line one\nperiodic r bullet\nend\tok"


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("D:20180530133107+02'00'", "2018-05-30T13:31:07+02:00"),
        ("D:20240822125427Z00'00'", "2024-08-22T12:54:27+00:00"),
        ("D:20100802090958-05'00'", "2010-08-02T09:09:58-05:00"),
        ("D:20210119093716", "2021-01-19T09:37:16"),
        ("D:2001", "2001-01-01T00:00:00"),
        ("20220414132421+05'24'", "2022-04-14T13:24:21+05:24"),
        ("D:20241399000000", None),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_pdf_dates(raw: str | None, iso: str | None) -> None:
    assert pdf_date(raw) == iso


def test_a_worker_killed_inside_pdfium_is_retried_with_pypdf(tmp_path: Path, monkeypatch) -> None:
    """pdfium is C: a crash there (or an allocation failure under the memory cap: pdfium aborts) ends
    the worker instead of raising. "auto" then reads the file once more with pypdf, in a fresh worker;
    pdfium chosen alone reports the dead worker. The crash is planted in the workers' interpreter."""
    from extractors import isolation

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\nimport pypdfium2\n\n\ndef _crash(*args, **kwargs):\n    os.abort()\n\n\n"
        "pypdfium2.PdfDocument = _crash\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    isolation.shutdown()  # workers started from here on load the hook
    try:
        doc = extractors.extract(CRAZY, limits=Limits(timeout_s=60))
        assert doc.extractor_version == _version("pypdf") and doc.chars > 800
        assert doc.warnings[0].startswith("pdf engine: the extraction worker died (exit code -6)")
        with pytest.raises(CorruptDocument, match=r"extractor process died \(exit code -6\)"):
            extractors.extract(CRAZY, limits=Limits(timeout_s=60, pdf_engine="pdfium"))
    finally:
        isolation.shutdown()
