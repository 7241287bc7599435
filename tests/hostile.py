"""Hostile files, made in the test's own folder: ZIP bombs, lying ZIP headers, DTD entities, a stuck PDF page.

Each builder streams what it writes, so a file that inflates to hundreds of MB costs the test a
few hundred KB of disk and memory to make.
"""

from __future__ import annotations

import os
import struct
import threading
import zipfile
import zlib
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


def flate_zeros(inflated: int) -> bytes:
    """A zlib stream of `inflated` zero bytes (a whole number of MiB), ~1030:1, made without inflating
    anything: one MiB is deflated after a full flush, whose output does not depend on what came
    before, and repeated; the checksum of n zeros is Adler-32 (1, n mod 65521)."""
    chunk = b"\0" * MiB
    deflate = zlib.compressobj(9)
    first = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = b"\x03\x00" + struct.pack(">I", ((inflated % 65521) << 16) | 1)  # empty last block, Adler-32
    return first + again * (inflated // MiB - 1) + end


def flate_bomb_pdf(path: Path, inflated: int = 4096 * MiB, *, tag: str = "") -> Path:
    """A one-page PDF (~4 MB for 4 GiB) whose content stream shows a line of text, then inflates to
    `inflated` bytes of zeros (PDF whitespace). `tag` makes files of different bytes (doc ids)."""
    zeros = flate_zeros(inflated)
    text = zlib.compress(b"BT /F1 12 Tf 72 720 Td (a flate bomb) Tj ET ")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents [4 0 R 5 0 R]"
        b" /Resources << /Font << /F1 6 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n%s\nendstream" % (len(zeros), zeros),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%" + tag.encode() + b"\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


class WorkerMemory:
    """Samples, from /proc, the extraction workers under this process while the `with` block runs:
    the peak of their summed resident memory (VmRSS) and of their summed address-space caps (the soft
    RLIMIT_AS of those that have one; what bounds them), and how many were alive at once."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.peak_rss = self.peak_caps = self.most_alive = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-memory", daemon=True)

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            rss = caps = alive = 0
            for pid in _workers_of(os.getpid()):
                try:
                    rss += _status_bytes(pid, "VmRSS")
                    caps += address_space_cap(pid)
                    alive += 1
                except (OSError, ValueError):  # it ended between the listing and the read
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_caps = max(self.peak_caps, caps)
            self.most_alive = max(self.most_alive, alive)
            if self._stop.wait(self.every_s):
                return


def _workers_of(parent: int) -> list[int]:
    """Extraction workers (`python -m extractors.isolation`) whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"extractors.isolation" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no {field} for {pid}")  # a zombie has no memory lines


def address_space_cap(pid: int) -> int:
    """The soft RLIMIT_AS of `pid` in bytes; 0 when it has none."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            soft = line.split()[3]
            return 0 if soft == "unlimited" else int(soft)
    return 0
