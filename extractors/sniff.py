"""What a file really is, from its bytes: a `.pdf` that holds a DOCX is read as DOCX.

The extension is never consulted. Containers that need a closer look (ZIP, OLE/CFB) are
opened just far enough to name what is inside, so the error says "legacy Word .doc" or
"encrypted OOXML" instead of a parser's stack trace.
"""

from __future__ import annotations

import io
import os
import zipfile

from extractors.errors import CorruptDocument, EmptyDocument, EncryptedDocument, UnsupportedFormat
from extractors.limits import Limits
from extractors.source import read_bytes

HEAD = 8192
CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
# Other binary formats people drop into folders, named so the error is useful.
KNOWN_BINARY = (
    (b"\x89PNG", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF8", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"{\\rtf", "RTF document"),
    (b"\x1f\x8b", "gzip archive"),
    (b"7z\xbc\xaf", "7-Zip archive"),
    (b"Rar!", "RAR archive"),
)
TEXT_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def _utf16(name: str) -> bytes:
    return name.encode("utf-16-le")


def sniff(path: str | os.PathLike[str], limits: Limits = Limits()) -> str:
    """Return "pdf", "docx" or "text", or raise the ExtractionError that says why not."""
    p = os.fspath(path)
    return sniff_bytes(p, read_bytes(p, limits))


def sniff_bytes(p: str, data: bytes) -> str:
    """`sniff` for a file already read into `data` (`p` names it in errors)."""
    head = data[:HEAD]
    if not head:
        raise EmptyDocument(p, "zero-byte file")
    if b"%PDF-" in head[:1024]:  # readers accept junk before the header; so do we
        return "pdf"
    if head.startswith(ZIP_MAGICS):
        return _sniff_zip(p, data)
    if head.startswith(CFB_MAGIC):
        raise _cfb_error(p, data)
    for magic, name in KNOWN_BINARY:
        if head.startswith(magic):
            raise UnsupportedFormat(p, f"{name} is not a document type we read")
    if head.startswith(TEXT_BOMS) or _looks_like_text(head):
        return "text"
    raise UnsupportedFormat(p, "binary data with no known document signature")


def _looks_like_text(head: bytes) -> bool:
    """No NUL bytes and few control characters: UTF-8 or a legacy 8-bit text."""
    if b"\x00" in head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return controls <= len(head) * 0.05


def _sniff_zip(p: str, data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = set(zf.namelist())
            # open().read(n), not read(): read() inflates the whole member first, however large.
            mimetype = zf.open("mimetype").read(100) if "mimetype" in names else b""
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CorruptDocument(p, f"damaged or truncated ZIP container ({exc})") from exc
    if "word/document.xml" in names or any(n.startswith("word/") and n.endswith(".xml") for n in names):
        return "docx"
    if any(n.startswith("xl/") for n in names):
        raise UnsupportedFormat(p, "Excel workbook (.xlsx) is not a document type we read")
    if any(n.startswith("ppt/") for n in names):
        raise UnsupportedFormat(p, "PowerPoint presentation (.pptx) is not a document type we read")
    if mimetype:
        raise UnsupportedFormat(
            p, f"ZIP-based format {mimetype.decode('ascii', 'replace')!r} is not supported"
        )
    raise UnsupportedFormat(p, "ZIP archive without a Word document inside")


def _cfb_error(p: str, data: bytes) -> Exception:
    """An OLE/CFB container: encrypted OOXML, or a legacy binary Office file.

    Directory entries store stream names in UTF-16LE, so a search of the bytes finds them
    without a full CFB parser (the byte limit was checked before we got here).
    """
    if data.find(_utf16("EncryptedPackage")) >= 0:
        return EncryptedDocument(p, "encrypted OOXML (password-protected Office file in an OLE container)")
    if data.find(_utf16("WordDocument")) >= 0:
        return UnsupportedFormat(p, "legacy Word .doc (Word 97-2003 binary); save it as .docx or PDF")
    if data.find(_utf16("Workbook")) >= 0 or data.find(_utf16("Book")) >= 0:
        return UnsupportedFormat(p, "legacy Excel .xls is not a document type we read")
    if data.find(_utf16("PowerPoint Document")) >= 0:
        return UnsupportedFormat(p, "legacy PowerPoint .ppt is not a document type we read")
    return UnsupportedFormat(p, "OLE/CFB container (legacy Office or MSI) is not a document type we read")
