"""kimidocs' own log lines in the flow run's logs (Prefect UI and API).

Retry warnings (`kimidocs.kimi`), per-document failures with their tracebacks (`kimidocs.run.pipeline`) and
extraction notes (`extractors`) are logged to plain Python loggers; Prefect ships only its own loggers to
the API unless `PREFECT_LOGGING_EXTRA_LOGGERS` was set before the process started. This attaches Prefect's
API handler to those loggers for the duration of a flow run, whatever started the process (worker,
`kimidocs serve`, a test). Records from threads without a Prefect run context (the pipeline's own pools)
are stamped with the flow run id, so they are not dropped. Tasks in other processes attach their own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect.context import get_run_context
from prefect.exceptions import MissingContextError
from prefect.logging.handlers import APILogHandler

LOGGERS = ("kimidocs", "extractors")


class _StampFlowRun(logging.Filter):
    """Give records from context-less threads this flow run's id."""

    def __init__(self, flow_run_id: UUID | str) -> None:
        super().__init__()
        self.flow_run_id = str(flow_run_id)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flow_run_id", None) is None:
            try:
                get_run_context()
            except MissingContextError:
                record.flow_run_id = self.flow_run_id
        return True


def _attached(flow_run_id: UUID | str) -> bool:
    """Whether this process already sends kimidocs' records to this flow run (the flow does, and its
    tasks run in its threads): a second handler would send every line twice."""
    return any(
        isinstance(f, _StampFlowRun) and f.flow_run_id == str(flow_run_id)
        for h in logging.getLogger(LOGGERS[0]).handlers
        for f in h.filters
    )


@contextmanager
def kimidocs_logs_to_run(flow_run_id: UUID | str | None, level: int = logging.INFO) -> Iterator[None]:
    """While the block runs, INFO and above from kimidocs' loggers also go to the flow run's logs."""
    if flow_run_id is None or _attached(flow_run_id):  # a task in the flow's own process: already sent
        yield
        return
    handler = APILogHandler(level=level)
    handler.addFilter(_StampFlowRun(flow_run_id))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old)
        handler.flush()
