"""Hostile DOCX packages (issue 10): ZIP bombs, lying ZIP headers, a page limit passed early on,
DTD entity references. Every file is made here, streamed, at a few hundred KB."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hostile import MiB, W, docx_bomb, docx_xml, lying_docx

import extractors
from extractors import CorruptDocument, Limits, TooLarge

# Runs one in-process extraction in a fresh interpreter under an address-space cap of its own,
# set by the test and not by the code under test: the cap holds whatever that code does.
CAPPED = textwrap.dedent(
    """
    import resource, sys
    import extractors
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), resource.RLIM_INFINITY))
    try:
        extractors.extract_here(sys.argv[1])
        print("Document")
    except extractors.ExtractionError as exc:
        print(exc.error_type, exc.reason, sep="\\t")
    except MemoryError:
        print("MemoryError")
    """
)


def extract_capped(path: Path, cap: int) -> tuple[str, str]:
    """(error type, reason) of `extract_here(path)` in a child limited to `cap` bytes of address space."""
    proc = subprocess.run(
        [sys.executable, "-c", CAPPED, str(path), str(cap)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    kind, _, reason = proc.stdout.strip().partition("\t")
    return kind, reason


def test_docx_bomb_is_refused_before_it_is_inflated(tmp_path: Path) -> None:
    bomb = docx_bomb(tmp_path / "bomb.docx", inflated=100 * MiB)  # ~300 KB on disk
    kind, reason = extract_capped(bomb, 256 * MiB)
    assert kind == "TooLarge", reason
    assert "word/document.xml would inflate" in reason and "ZIP bomb" in reason


def test_lying_zip_header_is_read_in_bounded_chunks(tmp_path: Path) -> None:
    """document.xml says 4 KB and inflates to 200 MB: read() used to inflate it all, then check."""
    lying = lying_docx(tmp_path / "lying.docx", inflated=200 * MiB, declared=4096)
    kind, reason = extract_capped(lying, 256 * MiB)
    assert kind == "CorruptDocument", reason
    assert "Bad CRC-32" in reason and "MemoryError" not in reason


def test_docx_page_limit_stops_the_parse_as_it_is_passed(tmp_path: Path) -> None:
    """Past the page limit nothing more is parsed: the broken XML at the end is never reached."""
    page = '<w:p><w:r><w:t>a page</w:t><w:br w:type="page"/></w:r></w:p>'
    broken = f'<w:document xmlns:w="{W}"><w:body>{page * 20}<w:p><w:broken'
    path = docx_xml(tmp_path / "long.docx", broken)
    with pytest.raises(TooLarge, match="11 pages is over the limit of 10 pages"):
        extractors.extract(path, limits=Limits(max_pages=10))
    with pytest.raises(CorruptDocument, match="not well-formed"):
        extractors.extract(path, limits=Limits(max_pages=100))


def test_docx_text_after_an_entity_reference_is_kept(tmp_path: Path) -> None:
    """Entities are never expanded (billion laughs); the text after one used to be dropped."""
    xml = (
        '<!DOCTYPE w:document [<!ENTITY co "ACME">]>'
        f'<w:document xmlns:w="{W}"><w:body>'
        "<w:p><w:r><w:t>Paid by &co; on 5 May &#38; again in June.</w:t></w:r></w:p>"
        "</w:body></w:document>"
    )
    doc = extractors.extract(docx_xml(tmp_path / "entity.docx", xml))
    assert doc.pages[0].text == "Paid by &co; on 5 May & again in June."
