"""Every way extraction can fail, as one exception tree.

    ExtractionError            base: names the file and the reason
     ├── UnsupportedFormat     the bytes are not a type we read (whatever the extension says)
     ├── EncryptedDocument     needs a password (the empty password was tried first)
     ├── CorruptDocument       the file is damaged beyond what the reader recovers
     ├── EmptyDocument         zero bytes, or no text and nothing to OCR
     ├── TooLarge              over the configured byte, page or memory limit (a ZIP or Flate bomb)
     ├── NoTextLayer           scanned: pages with images but no text
     └── ExtractionTimeout     a pathological file took longer than the per-document bound

Policy (as in pypdf): raise for a file we cannot use; add a `Document.warnings` entry for a
recoverable oddity (a bad page skipped, a repaired xref); log nothing the caller did not ask for.
"""

from __future__ import annotations


class ExtractionError(Exception):
    """A file could not be turned into a Document. `str()` names the file and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    @property
    def error_type(self) -> str:
        return type(self).__name__


class UnsupportedFormat(ExtractionError):
    pass


class EncryptedDocument(ExtractionError):
    pass


class CorruptDocument(ExtractionError):
    pass


class EmptyDocument(ExtractionError):
    pass


class TooLarge(ExtractionError):
    pass


class NoTextLayer(ExtractionError):
    pass


class ExtractionTimeout(ExtractionError):
    pass
