"""The one table from an exception raised for a document, or one of its jobs, to its outcome: the stage
it failed at, its typed reason, the document's status. The sequencer (sequence.py), the result kinds and
`document.outcome_of` all read it, so an error means the same wherever it is raised."""

from __future__ import annotations

import logging

from extractors.errors import ExtractionError
from kimidocs.core.budget import BudgetExceeded
from kimidocs.core.planning import PlanningError
from kimidocs.core.records import DocumentStatus, FailureStage
from kimidocs.core.results import OutputInvalid
from kimidocs.kimi.errors import KimiError
from kimidocs.run.context import RunAborted

log = logging.getLogger(__name__)


class LowTextQuality(Exception):
    """The document's text failed the quality gate (almost no text, mostly empty pages, garbled):
    refused before any money is spent."""

    error_type = "LowTextQuality"


def triage(err: BaseException, path: str) -> tuple[FailureStage, str, DocumentStatus]:
    """The one table from an exception raised for a document (or one of its jobs) to the stage it failed
    at, its typed reason and the document's status:

    ExtractionError   extract, its own type (an unreadable file)
    LowTextQuality    extract (the document row stays, marked failed)
    PlanningError     plan
    BudgetExceeded    call, `skipped` (the run's max_cost_usd)
    RunAborted        call (a wrong key, no quota: the run stops)
    KimiError         call, typed by the error's class
    OutputInvalid     validate (no usable answer after the repair call)
    anything else     pipeline: a bug or an unforeseen file, logged with its traceback; never a reason
                      to stop the batch
    """
    if isinstance(err, ExtractionError | LowTextQuality):
        return FailureStage.EXTRACT, err.error_type, DocumentStatus.FAILED
    if isinstance(err, PlanningError):
        return FailureStage.PLAN, "PlanningError", DocumentStatus.FAILED
    if isinstance(err, BudgetExceeded):
        return FailureStage.CALL, "BudgetExceeded", DocumentStatus.SKIPPED
    if isinstance(err, RunAborted | KimiError):
        return FailureStage.CALL, type(err).__name__, DocumentStatus.FAILED
    if isinstance(err, OutputInvalid):
        return FailureStage.VALIDATE, "OutputInvalid", DocumentStatus.FAILED
    log.error("unexpected error on %s", path, exc_info=err)
    return FailureStage.PIPELINE, type(err).__name__, DocumentStatus.FAILED
