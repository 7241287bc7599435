"""Plan steps + profile -> chat request bodies, laid out for the provider's automatic prefix cache.

Every request is three messages, the longest stable part first (kimi-api.md §2a):

    [system: profile.system (instructions + schema)]   identical for every call of a profile
    [user:   the document, a chunk, or partials]       identical for every task over one document
    [user:   the task]                                  the only part that varies per task

The markup around the text (page, partial and document blocks) is `kimidocs.core.markup`'s: it escapes
tags of its own vocabulary inside document text, so a file cannot forge a page or a document.
The body carries no model policy (thinking, sampling): the Kimi client applies it. `request_key` is
the sha256 of the canonical body, so the same work has the same key in every run (resume by key).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from kimidocs.core import markup, tokens
from kimidocs.core.models import ModelInfo
from kimidocs.core.planning import (
    IMAGE_TOKENS_EST,
    PAGE_OVERHEAD_TOKENS,
    PARTIAL_OVERHEAD_TOKENS,
    PRIMING_TOKENS,
    Budget,
    Chunk,
    Piece,
)
from kimidocs.core.records import Stage
from prompts import Profile

Counter = Callable[[str], int]
# An image as (mime type, bytes); scanned pages are sent as image_url parts beside their page marker.
ImageData = tuple[str, bytes]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One chat call to make. `body` is JSON-serialisable and does not change after creation.

    Attributes:
        body: model, messages, response_format json_object, max_tokens.
        request_key: sha256 of the canonical JSON body (stable across runs).
        prompt_tokens_est: our o200k estimate of the prompt, message overhead included.
        stage: single | map | reduce | repair | pack.
        chunk_index: the plan chunk (map, single) or the group index within a level (reduce).
        level: reduce level, from 1.
        prefix_key: sha256 of model + system + document message; requests sharing it share a cache prefix.
        first_page, last_page: the pages this request reads (for logs and failures).
        prefix_tokens_est: our estimate of the prefix `prefix_key` names (system + document message).
    """

    body: Mapping[str, Any] = field(hash=False, compare=False)
    request_key: str
    prompt_tokens_est: int
    stage: Stage
    chunk_index: int | None = None
    level: int | None = None
    prefix_key: str = ""
    first_page: int | None = None
    last_page: int | None = None
    prefix_tokens_est: int = 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body["messages"])

    @property
    def max_tokens(self) -> int:
        return int(self.body["max_tokens"])


@dataclass(frozen=True, slots=True)
class Partial:
    """A map or intermediate reduce result on its way into a reduce call."""

    first_page: int
    last_page: int
    json: str  # compact JSON of a Summary
    tokens: int  # our count of `json`

    @property
    def cost(self) -> int:
        return self.tokens + PARTIAL_OVERHEAD_TOKENS


def canonical_json(obj: Any) -> str:
    """The one serialisation that keys are computed from: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=64)
def _count_fixed(text: str) -> int:
    """Counts of the profile's fixed texts, computed once per process."""
    return tokens.count(text)


# ---------------------------------------------------------------------------------------------- rendering


def render_page(page: int, text: str) -> str:
    return markup.page_block(page, text)


def render_pieces(pieces: Sequence[Piece]) -> str:
    """Page blocks of a chunk, one per piece, in order."""
    return "\n".join(render_page(p.page, p.text) for p in pieces)


def render_partials(partials: Sequence[Partial]) -> str:
    return "\n".join(markup.partial_block(p.first_page, p.last_page, p.json) for p in partials)


def document_content(
    pieces: Sequence[Piece], images: Mapping[int, Sequence[ImageData]] | None = None
) -> str | list[dict[str, Any]]:
    """The document message's content: plain text, or text and image parts when pages carry images.

    An image goes right after its page's opening marker, so the model (and the emulator) know which
    page it shows.
    """
    if not images or not any(images.get(p.page) for p in pieces if _starts_page(p)):
        return render_pieces(pieces)
    parts: list[dict[str, Any]] = []
    text: list[str] = []
    for i, p in enumerate(pieces):
        sep = "\n" if i else ""
        page_images = images.get(p.page, ()) if _starts_page(p) else ()
        if not page_images:
            text.append(sep + render_page(p.page, p.text))
            continue
        text.append(f"{sep}{markup.page_open(p.page)}\n")
        parts.append({"type": "text", "text": "".join(text)})
        text = []
        for mime, data in page_images:
            url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            parts.append({"type": "image_url", "image_url": {"url": url}})
        text.append(f"{markup.escape(p.text)}\n{markup.PAGE_CLOSE}")
    if text:
        parts.append({"type": "text", "text": "".join(text)})
    return parts


def _starts_page(piece: Piece) -> bool:
    """True for a whole page or the first part of a split one (where the page's images go)."""
    return all(k == 1 for k in piece.part)


# ---------------------------------------------------------------------------------------------- builders


def build_request(
    profile: Profile,
    model: ModelInfo,
    content: str | list[dict[str, Any]],
    task: str,
    *,
    stage: Stage,
    max_tokens: int,
    content_tokens: int,
    chunk_index: int | None = None,
    level: int | None = None,
    first_page: int | None = None,
    last_page: int | None = None,
) -> ChatRequest:
    """The three-message request; `content_tokens` is the caller's estimate of `content`."""
    system = {"role": "system", "content": profile.system}
    document = {"role": "user", "content": content}
    messages = [system, document, {"role": "user", "content": task}]
    body = {
        "model": model.id,
        "messages": messages,
        "response_format": {"type": "json_object"},
        "max_tokens": int(max_tokens),
    }
    est = (
        _count_fixed(profile.system)
        + content_tokens
        + tokens.count(task)
        + 3 * tokens.MESSAGE_OVERHEAD
        + PRIMING_TOKENS
    )
    return ChatRequest(
        body=body,
        request_key=sha256_hex(canonical_json(body)),
        prompt_tokens_est=est,
        stage=stage,
        chunk_index=chunk_index,
        level=level,
        prefix_key=prefix_key_of(body),
        first_page=first_page,
        last_page=last_page,
        prefix_tokens_est=_count_fixed(profile.system) + content_tokens + 2 * tokens.MESSAGE_OVERHEAD,
    )


def prefix_key_of(body: Mapping[str, Any]) -> str:
    """Hash of what a cache prefix is made of: the model, the system and the document message."""
    return sha256_hex(canonical_json({"model": body["model"], "messages": list(body["messages"][:2])}))


def chunk_request(
    profile: Profile,
    model: ModelInfo,
    chunk: Chunk,
    budget: Budget,
    *,
    pages_total: int,
    parts: int,
    single: bool,
    images: Mapping[int, Sequence[ImageData]] | None = None,
    task: str | None = None,
) -> ChatRequest:
    """A single call (whole document, final output) or a map call (one chunk, partial output).

    `task` replaces the profile's task text (several tasks over one document share its prefix).
    """
    if task is None:
        stage_task = "task" if single else "map"
        task = profile.task(
            stage_task,
            part=chunk.index + 1,
            parts=parts,
            first_page=chunk.first_page,
            last_page=chunk.last_page,
            total_pages=pages_total,
        )
    return build_request(
        profile,
        model,
        document_content(chunk.pieces, images),
        task,
        stage=Stage.SINGLE if single else Stage.MAP,
        max_tokens=budget.max_output_tokens if single else budget.partial_output_tokens,
        content_tokens=chunk.tokens_est,
        chunk_index=chunk.index,
        first_page=chunk.first_page,
        last_page=chunk.last_page,
    )


def task_requests(
    profile: Profile,
    model: ModelInfo,
    chunk: Chunk,
    budget: Budget,
    tasks: Sequence[str],
    *,
    pages_total: int,
    images: Mapping[int, Sequence[ImageData]] | None = None,
) -> list[ChatRequest]:
    """Several tasks over one whole document: same system and document message, so tasks 2..N read
    the document from the cache (send the first alone, then the rest; see mapreduce.fan_out)."""
    return [
        chunk_request(
            profile,
            model,
            chunk,
            budget,
            pages_total=pages_total,
            parts=1,
            single=True,
            images=images,
            task=t,
        )
        for t in tasks
    ]


def reduce_request(
    profile: Profile,
    model: ModelInfo,
    partials: Sequence[Partial],
    budget: Budget,
    *,
    pages_total: int,
    level: int,
    index: int,
    final: bool,
) -> ChatRequest:
    """Merge `partials` (consecutive, in page order); the last reduce gets the final output size."""
    first, last = partials[0].first_page, partials[-1].last_page
    task = profile.task("reduce", first_page=first, last_page=last, total_pages=pages_total)
    return build_request(
        profile,
        model,
        render_partials(partials),
        task,
        stage=Stage.REDUCE,
        max_tokens=budget.max_output_tokens if final else budget.partial_output_tokens,
        content_tokens=sum(p.cost for p in partials),
        chunk_index=index,
        level=level,
        first_page=first,
        last_page=last,
    )


@dataclass(frozen=True, slots=True)
class PackedDocument:
    """One small document in a packed request: its id (e.g. the sha256) and its pieces."""

    doc_id: str
    pieces: tuple[Piece, ...]

    @property
    def cost(self) -> int:
        return sum(p.cost for p in self.pieces) + 12  # the <document id=...> markup


def pack_request(
    profile: Profile,
    model: ModelInfo,
    documents: Sequence[PackedDocument],
    budget: Budget,
    *,
    max_tokens: int | None = None,
) -> ChatRequest:
    """Several small documents in one call; the answer is {"documents": {"ID": {...summary...}}}.

    The pipeline decides when to pack (each document far below the chunk size, combined within it);
    `max_tokens` defaults to the profile's final output size.
    """
    if not documents:
        raise ValueError("pack_request needs at least one document")
    content = "\n".join(markup.document_block(d.doc_id, render_pieces(d.pieces)) for d in documents)
    task = profile.task("pack", count=len(documents))
    return build_request(
        profile,
        model,
        content,
        task,
        stage=Stage.PACK,
        max_tokens=max_tokens or budget.max_output_tokens,
        content_tokens=sum(d.cost for d in documents),
    )


def followup_request(
    original: ChatRequest, extra_messages: Sequence[dict[str, Any]], extra_tokens: int, *, stage: Stage
) -> ChatRequest:
    """`original` with messages appended after the task (same prefix, same max_tokens)."""
    body = dict(original.body)
    body["messages"] = [*original.body["messages"], *extra_messages]
    return ChatRequest(
        body=body,
        request_key=sha256_hex(canonical_json(body)),
        prompt_tokens_est=original.prompt_tokens_est + extra_tokens,
        stage=stage,
        chunk_index=original.chunk_index,
        level=original.level,
        prefix_key=original.prefix_key,
        first_page=original.first_page,
        last_page=original.last_page,
        prefix_tokens_est=original.prefix_tokens_est,
    )


__all__ = [
    "IMAGE_TOKENS_EST",
    "PAGE_OVERHEAD_TOKENS",
    "ChatRequest",
    "PackedDocument",
    "Partial",
    "build_request",
    "canonical_json",
    "chunk_request",
    "document_content",
    "followup_request",
    "pack_request",
    "prefix_key_of",
    "reduce_request",
    "render_page",
    "render_partials",
    "render_pieces",
    "task_requests",
]
