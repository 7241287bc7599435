"""Hostile files, made in the test's own folder: ZIP bombs, lying ZIP headers, DTD entities, a stuck PDF page.

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


def stuck_pdf(
    path: Path, honest_pages: int = 0, *, fanout: int = 100, depth: int = 3, leaf: int = 100_000
) -> Path:
    """A PDF of `honest_pages` pages of one line each, then a page that no PDF reader finishes within
    any time bound a test uses, on any machine: a stuck parser by construction, in ~3 KB of file.

    The last page draws form X1 `fanout` times, X1 draws X2 `fanout` times, ... down to `depth` levels,
    and the deepest form shows `leaf` empty strings (`() Tj`): no text, so no memory grows. Every draw is
    parsed and interpreted anew, so with the defaults pdfium goes through 100^3 x 100,000 = 10^11
    operators (~1 ns each would still be 100 s; it takes ~2.5 hours on the 2-core machine these tests
    were written on), and pypdf, which stops after 5,000 form draws per page, through ~5,000 x 100,000 =
    5 x 10^8 operators of pure Python (~1.5 hours there). Both are killed by the extraction time bound
    long before; a reader that one day refused such a page outright would make the test fail, not pass.
    """
    from pypdf import PdfWriter
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject

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
    fonts = DictionaryObject({NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})})

    def stream(data: bytes, **entries: object) -> object:
        obj = DecodedStreamObject()
        obj.set_data(data)
        obj.update({NameObject(f"/{key}"): value for key, value in entries.items()})
        return writer._add_object(obj.flate_encode())

    for n in range(honest_pages):
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = fonts
        page[NameObject("/Contents")] = stream(f"BT /F1 12 Tf 72 720 Td (honest page {n + 1}) Tj ET".encode())
    box = ArrayObject([NumberObject(0), NumberObject(0), NumberObject(612), NumberObject(792)])
    form = stream(
        b"BT /F1 12 Tf " + b"() Tj " * leaf + b"ET",
        Type=NameObject("/XObject"),
        Subtype=NameObject("/Form"),
        BBox=box,
        Resources=fonts,
    )
    draws = b"/X Do " * fanout
    for _ in range(depth - 1):
        uses = DictionaryObject({NameObject("/XObject"): DictionaryObject({NameObject("/X"): form})})
        form = stream(
            draws, Type=NameObject("/XObject"), Subtype=NameObject("/Form"), BBox=box, Resources=uses
        )
    page = writer.add_blank_page(612, 792)
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/XObject"): DictionaryObject({NameObject("/X"): form})}
    )
    page[NameObject("/Contents")] = stream(draws)
    writer.write(str(path))
    return path
