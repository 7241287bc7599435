"""The text-quality gate: is this extraction worth paying a model to read?

Cheap statistics over the pages; the thresholds are deliberately loose (they stop garbage,
not merely odd documents) and are keyword arguments so a caller can tighten them.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from extractors.document import Document
from extractors.paging import REPLACEMENT


@dataclass(frozen=True, slots=True)
class QualityReport:
    chars_per_page: float
    empty_page_ratio: float  # pages with neither text nor attached images
    replacement_char_ratio: float  # U+FFFD share: undecodable bytes or unmapped glyphs
    ok: bool
    reasons: tuple[str, ...]


def quality(
    doc: Document,
    *,
    min_chars_per_page: float = 20.0,
    max_empty_page_ratio: float = 0.5,
    max_replacement_ratio: float = 0.05,
) -> QualityReport:
    """Judge `doc`. Pages carrying images for a multimodal model count as readable."""
    pages = doc.pages
    n = max(len(pages), 1)
    chars = 0
    replacements = 0
    empty = 0
    imaged = 0
    for page in pages:
        stripped = len(page.text.strip())
        chars += stripped
        replacements += page.text.count(REPLACEMENT)
        if page.images:
            imaged += 1
        elif not stripped:
            empty += 1
    per_page = chars / n
    empty_ratio = empty / n
    repl_ratio = replacements / chars if chars else 0.0
    reasons = []
    text_pages = n - imaged
    # Only a PDF page is a physical page whose near-emptiness signals failed extraction;
    # a DOCX or text file that is short is simply short.
    if doc.kind == "pdf" and text_pages and chars / text_pages < min_chars_per_page:
        reasons.append(f"{chars / text_pages:.1f} chars per page (< {min_chars_per_page:g}): almost no text")
    if empty_ratio > max_empty_page_ratio:
        reasons.append(
            f"{empty}/{len(pages)} pages have no text ({empty_ratio:.0%} > {max_empty_page_ratio:.0%})"
        )
    if repl_ratio > max_replacement_ratio:
        reasons.append(
            f"{repl_ratio:.1%} replacement characters (> {max_replacement_ratio:.0%}): broken encoding"
        )
    scripts = _mixed_scripts(pages)
    if scripts:
        reasons.append(f"letters from {len(scripts)} scripts ({', '.join(scripts)}): broken font encoding")
    if not pages:
        reasons.append("no pages")
    return QualityReport(
        round(per_page, 1), round(empty_ratio, 4), round(repl_ratio, 4), not reasons, tuple(reasons)
    )


def _mixed_scripts(pages: tuple, sample: int = 20_000) -> list[str]:
    """Scripts holding >= 1% of the first `sample` letters, when there are five or more of them.

    A font whose glyphs map to the wrong code points (e.g. a vertical CJK CMap, jo.pdf) yields
    letters scattered over Greek, Arabic, Cyrillic, Armenian...; real text uses one or two
    scripts plus Latin. Japanese kana and ideographs count as one script.
    """
    counts: dict[str, int] = {}
    n = 0
    for page in pages:
        for ch in page.text:
            if ch.isalpha():
                script = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
                script = _CJK.get(script, script)
                counts[script] = counts.get(script, 0) + 1
                n += 1
                if n >= sample:
                    break
        if n >= sample:
            break
    if n < 50:
        return []
    common = sorted((s for s, c in counts.items() if c >= n * 0.01), key=lambda s: -counts[s])
    return common if len(common) >= 5 else []


_CJK = {name: "CJK" for name in ("HIRAGANA", "KATAKANA", "HALFWIDTH", "FULLWIDTH", "IDEOGRAPHIC")}
