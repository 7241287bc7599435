"""One document end to end, and a folder of them, with no Prefect in sight.

    discover -> sha256 (unchanged? skip) -> extract -> store document -> quality gate
      -> plan -> map/reduce calls (each logged the moment it returns) -> citations -> store summary

This module is the facade that `flows/`, the commands, tests and benchmarks import; the work is done in

    run.py       a run's lifecycle: open_run / attach_run / close_run / abandon_run, RunOptions, RunReport
    analysis.py  one document: prepare (extract, gate, count, plan), summarise, store, errors -> outcomes
    caller.py    the Kimi caller: resume by request key, budget, policy, call log, usage estimate
    packer.py    groups of files, and packing small documents several to a request within a group

`flows/` wraps `open_run` / `analyze_group` / `close_run` in Prefect tasks; `run_folder` is the same
thing with a thread pool, for `kimidocs analyze` without Prefect and for benchmarks. State is written
after success, never before: a call row exists only for a call that returned, a summary only for a
document that finished, so a crashed run resumes without re-paying.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kimidocs.run.backend import Backend
from kimidocs.run.batch_mode import BATCH_PENDING, batch_pending, run_batch_mode
from kimidocs.run.caller import KimiCaller, estimated_usage
from kimidocs.run.context import (
    QUIET,
    DocumentOutcome,
    Observer,
    PackCounts,
    QuietObserver,
    RunAborted,
    RunContext,
    RunOptions,
    RunReport,
    RunStarted,
    abandon_run,
    attach_run,
    check_options,
    close_run,
    detach_run,
    in_file_order,
    list_files,
    offered_model,
    open_run,
    release_run,
)
from kimidocs.run.document import (
    PreparedDocument,
    analyze_file,
    extraction_limits,
    outcome_of,
    prepare_document,
    prepare_file,
    skipped_by_abort,
)
from kimidocs.run.packer import GroupResult, Packer, analyze_group, groups, packer_for, packing_on
from kimidocs.run.settings import Settings
from kimidocs.run.triage import LowTextQuality

__all__ = [
    "BATCH_PENDING",
    "QUIET",
    "DocumentOutcome",
    "GroupResult",
    "KimiCaller",
    "LowTextQuality",
    "Observer",
    "PackCounts",
    "Packer",
    "PreparedDocument",
    "QuietObserver",
    "RunAborted",
    "RunContext",
    "RunOptions",
    "RunReport",
    "RunStarted",
    "abandon_run",
    "analyze_file",
    "analyze_group",
    "attach_run",
    "batch_pending",
    "check_options",
    "close_run",
    "detach_run",
    "estimated_usage",
    "extraction_limits",
    "groups",
    "in_file_order",
    "list_files",
    "offered_model",
    "open_run",
    "outcome_of",
    "packer_for",
    "packing_on",
    "prepare_document",
    "prepare_file",
    "release_run",
    "run_batch_mode",
    "run_folder",
    "skipped_by_abort",
]


def run_folder(
    options: RunOptions,
    settings: Settings | None = None,
    *,
    observer: Observer = QUIET,
    backend: Backend | None = None,
) -> RunReport:
    """Analyse a folder without Prefect: groups of documents in a thread pool, calls limited per
    account."""
    ctx = open_run(options, settings, observer=observer, backend=backend)
    try:
        files = list_files(ctx)
        observer.files_found(len(files))
        if options.mode == "batch" and not options.dry_run:  # Kimi's Batch API, in rounds (batchrun.py)
            outcomes = run_batch_mode(ctx, files)
        else:
            work = groups(ctx, files)
            workers = max(1, min(options.concurrency, len(work) or 1))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kimidocs-doc") as pool:
                done = list(pool.map(lambda group: analyze_group(ctx, group), work))
            for result in done:
                ctx.packs.add(result.packs)
            outcomes = in_file_order(files, (result.outcomes for result in done))
    except BaseException as err:
        abandon_run(ctx, err)
        raise
    return close_run(ctx, outcomes)
