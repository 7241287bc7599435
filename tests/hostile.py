"""Hostile files, made in the test's own folder: ZIP bombs, lying ZIP headers, DTD entities.

Each builder streams what it writes, so a file that inflates to hundreds of MB costs the test a
few hundred KB of disk and memory to make.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
REL = "http://schemas.openxmlformats.org/package/2006/relationships"
DOC_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
MiB = 1024 * 1024
PARAGRAPH = b"<w:p><w:r><w:t>all work and no play</w:t></w:r></w:p>"


def _package(zf: zipfile.ZipFile) -> None:
    root = f'<Relationship Id="rId1" Type="{DOC_REL}/officeDocument" Target="word/document.xml"/>'
    zf.writestr("[Content_Types].xml", "<Types/>")
    zf.writestr("_rels/.rels", f'<Relationships xmlns="{REL}">{root}</Relationships>')


def docx_bomb(path: Path, inflated: int = 100 * MiB, *, tail: bytes = b"</w:body></w:document>") -> Path:
    """A DOCX whose document.xml is `inflated` bytes of paragraphs, deflated ~1000:1."""
    head = f'<w:document xmlns:w="{W}"><w:body>'.encode()
    block = PARAGRAPH * (MiB // len(PARAGRAPH))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        _package(zf)
        with zf.open("word/document.xml", "w") as fh:
            fh.write(head)
            for _ in range(inflated // len(block)):
                fh.write(block)
            fh.write(tail)
    return path


def lie_about_size(path: Path, member: str, declared: int) -> Path:
    """Rewrite `member`'s uncompressed size in its local header and in the central directory."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        start = zf.start_dir
    assert info.file_size < 0xFFFFFFFF, "a ZIP64 member keeps its size elsewhere"
    struct.pack_into("<I", data, info.header_offset + 22, declared)  # local file header
    pos = start
    while data[pos : pos + 4] == b"PK\x01\x02":  # central directory entries
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, pos + 28)
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, pos + 24, declared)
        pos += 46 + name_len + extra_len + comment_len
    path.write_bytes(bytes(data))
    return path


def lying_docx(path: Path, inflated: int = 100 * MiB, declared: int = 4096) -> Path:
    """A DOCX whose document.xml says it inflates to `declared` bytes and really makes `inflated`."""
    head = f'<w:document xmlns:w="{W}"><w:body>'.encode()
    block = PARAGRAPH * (MiB // len(PARAGRAPH))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        _package(zf)
        with zf.open("word/document.xml", "w") as fh:
            fh.write(head)
            for _ in range(inflated // len(block)):
                fh.write(block)
            fh.write(b"</w:body></w:document>")
    return lie_about_size(path, "word/document.xml", declared)


def docx_xml(path: Path, document_xml: str) -> Path:
    """A DOCX with `document_xml` as its main part, verbatim (a DTD may come first)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        _package(zf)
        zf.writestr("word/document.xml", document_xml)
    return path


def slow_pdf(path: Path, operators_per_page: list[int]) -> Path:
    """A PDF whose pages cost pypdf's text extraction time, not bytes: each page's content stream is
    `(a) Tj` repeated (200,000 of them: ~4 s of CPU in a 3 KB file). A page with 200,000 is a stuck
    parser for any sane time bound; many pages with a few thousand each are a long honest file."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for n in operators_per_page:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = DecodedStreamObject()
        stream.set_data(b"BT /F1 12 Tf 72 720 Td " + b"(a) Tj " * n + b"ET")
        page[NameObject("/Contents")] = writer._add_object(stream.flate_encode())
    writer.write(str(path))
    return path
