"""One run spread over several workers: the files split into shards, the outcomes settled. No Prefect.

    split_files      a run's files -> `parts` shards of about equal bytes; a document is never split, so a
                     long document's map-reduce (and its prefix cache) stays in one process
    paid_by_run      what the run's calls cost per document, from the store (every attempt of the run)
    settle           the children's outcomes with the store's totals: the store is the source of truth
    lost_shard       outcomes for a shard whose child never came back (crashed more often than allowed)

Why the totals come from the store and not only from the children: a child killed mid-shard returns
nothing, and the child that re-runs its shard finds the documents the dead one finished already stored,
so it reports them `unchanged` at $0. The `calls` rows of the run (written the moment each call returns,
by whichever process made it) say what was really paid, on every machine that shares the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from kimidocs.core.records import CallTotals, DocumentStatus
from kimidocs.run.context import DocumentOutcome
from kimidocs.run.discover import FoundFile
from kimidocs.store import Store

#: error_type of the documents of a shard whose child run crashed every time it was tried.
LOST_SHARD = "ShardLost"


def split_files(files: Sequence[FoundFile], parts: int) -> list[list[FoundFile]]:
    """`files` in at most `parts` non-empty shards of about equal total size, each in `files`' order.

    Largest first onto the lightest shard (LPT), so one big document does not end up beside many
    others while another shard idles; deterministic for the same files.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    if not files:
        return []
    count = min(parts, len(files))
    loads = [0] * count
    members: list[list[int]] = [[] for _ in range(count)]
    order = sorted(range(len(files)), key=lambda i: (-files[i].size, i))
    for i in order:
        lightest = min(range(count), key=lambda b: (loads[b], b))
        loads[lightest] += max(files[i].size, 1)
        members[lightest].append(i)
    return [[files[i] for i in sorted(shard)] for shard in members]


def paid_by_run(store: Store, run_id: str) -> dict[str, CallTotals]:
    """Per document, what the run's logged calls cost (a failed request is logged but not counted)."""
    return {doc: CallTotals(n, p, c, o, cost) for doc, n, p, c, o, cost in store.paid_by_run(run_id)}


def settle(outcomes: Iterable[DocumentOutcome], paid: Mapping[str, CallTotals]) -> list[DocumentOutcome]:
    """The outcomes with what the run paid for each document; `unchanged` becomes `ok` when this run paid
    for it (an earlier attempt of this run finished it: a child that crashed after storing it)."""
    settled = []
    for outcome in outcomes:
        totals = paid.get(outcome.doc_id or "")
        if totals is None:
            settled.append(outcome)
            continue
        if outcome.status == DocumentStatus.UNCHANGED and totals.calls > 0:
            outcome = replace(outcome, status=DocumentStatus.OK)
        settled.append(outcome.with_totals(totals))
    return settled


def lost_shard(files: Iterable[FoundFile], reason: str) -> list[DocumentOutcome]:
    """Failed outcomes for the documents of a shard that no child run finished."""
    return [
        DocumentOutcome(f.path, DocumentStatus.FAILED, error_type=LOST_SHARD, message=reason) for f in files
    ]
