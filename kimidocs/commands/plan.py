"""`kimidocs plan FILE`: how a document would be sent to Kimi and what it would cost, calling nothing.

With `--json`, one object:
    {"path", "model", "window", "tokens_est", "strategy": "single"|"map_reduce",
     "chunks": [{"index", "first_page", "last_page", "tokens_est"}], "reduce_levels", "calls",
     "coverage", "cost_usd_est", "mode", ...}
`--mode batch` estimates the Batch API price instead: no cache hits inside a batch, every price times the
model's batch factor (a model without a batch price is refused with one error line).
Exit code 1 with one `error: <Type>: <message>` line when the file cannot be extracted or planned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from extractors import ExtractionError
from kimidocs.commands.extract import PageProgress
from kimidocs.core.costs import CostEstimate, batch_estimate, lower_bound
from kimidocs.core.models import ModelInfo, NoBatchSupport, UnknownModel
from kimidocs.core.planning import Plan, PlanningError
from kimidocs.run.context import resolve_profile
from kimidocs.run.document import prepare_file
from kimidocs.run.settings import load_settings
from kimidocs.run.triage import LowTextQuality
from prompts import ProfileError


def plan_record(
    path: str,
    model: ModelInfo,
    plan: Plan,
    cost_usd: float,
    *,
    profile: str = "summary",
    tasks: tuple[str, ...] = (),
    estimate: CostEstimate | None = None,
    mode: str = "interactive",
) -> dict[str, Any]:
    """The `--json` object (the command's contract; keep the keys stable; new keys only added)."""
    return {
        "path": path,
        "model": model.id,
        "window": model.window,
        "tokens_est": plan.tokens_est,
        "strategy": plan.strategy,
        "chunks": [
            {
                "index": c.index,
                "first_page": c.first_page,
                "last_page": c.last_page,
                "tokens_est": c.tokens_est,
            }
            for c in plan.chunks
        ],
        "reduce_levels": plan.reduce_levels,
        "calls": plan.calls,
        "coverage": plan.coverage,
        "cost_usd_est": round(cost_usd, 6),
        "profile": profile,
        "tasks": list(tasks),
        "calls_est": estimate.calls if estimate else plan.calls,
        "prompt_tokens_est": estimate.prompt_tokens if estimate else None,
        "cached_tokens_est": estimate.cached_tokens_expected if estimate else None,
        "mode": mode,
    }


def _table(rec: dict[str, Any], plan: Plan) -> Table:
    title = (
        f"{Path(rec['path']).name}: {rec['strategy']}, {len(rec['chunks'])} chunk(s), "
        f"{rec['reduce_levels']} reduce level(s), {rec['calls']} call(s)"
    )
    table = Table(title=title)
    for col in ("chunk", "pages", "tokens_est"):
        table.add_column(col, justify="right")
    for c in rec["chunks"]:
        pages = (
            str(c["first_page"])
            if c["first_page"] == c["last_page"]
            else f"{c['first_page']}-{c['last_page']}"
        )
        table.add_row(str(c["index"]), pages, f"{c['tokens_est']:,}")
    for s in plan.skipped_pages:
        table.add_row("skipped", str(s.page), s.reason)
    return table


def _notes(rec: dict[str, Any], plan: Plan, floor_usd: float) -> list[str]:
    b = plan.budget
    tasks = rec["tasks"]
    per_task = (
        [
            f"profile {rec['profile']}: {len(tasks)} task(s) ({', '.join(tasks)}) on one plan, "
            f"{rec['calls_est']} call(s); {rec['cached_tokens_est']:,} of {rec['prompt_tokens_est']:,} "
            "prompt tokens expected from the cache (tasks 2..N read the document prefix)"
        ]
        if tasks
        else []
    )
    price = (
        "at the batch price (Batch API: no cache hits counted, every price times the batch factor), "
        if rec["mode"] == "batch"
        else ""
    )
    return [
        *per_task,
        f"{rec['model']}: window {b.window:,} = text {b.chunk_tokens:,} + fixed prompt "
        f"{b.fixed_prompt_tokens:,} + output {b.max_output_tokens:,} + margin {b.margin:,}",
        f"document {rec['tokens_est']:,} tokens (o200k estimate), coverage {rec['coverage']:.0%}",
        f"estimated cost {price}${rec['cost_usd_est']:.4f} (output counted at max_tokens); "
        f"floor ${floor_usd:.4f} (every token once at the miss price + final output)",
    ]


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        file: Annotated[Path, typer.Argument(help="A PDF, DOCX or text file.")],
        model: Annotated[
            str | None, typer.Option("--model", "-m", help="Model id (default: KIMI_MODEL).")
        ] = None,
        profile: Annotated[
            str, typer.Option("--profile", "-p", help="Profile on the search path (all its tasks).")
        ] = "summary",
        as_json: Annotated[bool, typer.Option("--json", help="Print the plan as one JSON object.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
        mode: Annotated[
            str,
            typer.Option(
                "--mode",
                help="interactive (real-time price, cache hits counted) or batch (the Batch API price: "
                "no cache hits, times the model's batch factor).",
            ),
        ] = "interactive",
    ) -> None:
        """Plan FILE for a model (chunks, reduce levels, calls, estimated cost) without calling anything.

        The same preparation as `kimidocs analyze` (limits, quality gate, count, plan): a file that
        `analyze` refuses is refused here, with the same typed error.
        """
        if mode not in ("interactive", "batch"):
            typer.echo(f"error: --mode must be interactive or batch, not {mode!r}", err=True)
            raise typer.Exit(1)
        try:
            settings = load_settings()
            info = settings.model(model)
            if mode == "batch" and not info.supports_batch:
                raise NoBatchSupport(info.id)
            found = resolve_profile(profile, settings)
            if found.shadow_note:
                typer.echo(f"note: {found.shadow_note}", err=True)
            names = tuple(t.name for t in found.declared.tasks) if found.declared else ()
            # Pages extracted, on a terminal only (a 934-page book takes a while with pypdf).
            bars = PageProgress(sys.stderr.isatty() and not (as_json or quiet))
            with bars.progress:
                prepared = prepare_file(
                    file,
                    settings,
                    info,
                    found.profile,
                    tasks=max(len(names), 1),
                    on_progress=lambda d, t: bars(str(file), d, t),
                )
        except (
            ExtractionError,
            LowTextQuality,
            PlanningError,
            UnknownModel,
            ProfileError,
            NoBatchSupport,
        ) as exc:
            name = getattr(exc, "error_type", None) or type(exc).__name__
            typer.echo(f"error: {name}: {exc}", err=True)
            raise typer.Exit(1) from None
        plan = prepared.plan
        estimate, cost = prepared.estimate, prepared.cost_usd_est
        if mode == "batch" and estimate is not None:
            estimate = batch_estimate(estimate, info)
            cost = estimate.usd
        rec = plan_record(
            str(file),
            info,
            plan,
            cost,
            profile=profile,
            tasks=names,
            estimate=estimate,
            mode=mode,
        )
        if as_json:
            typer.echo(json.dumps(rec))
            return
        floor = lower_bound(plan.tokens_est, plan.budget.max_output_tokens * max(len(names), 1), info)
        console = Console()
        console.print(_table(rec, plan))
        for line in _notes(rec, plan, floor):
            console.print(line, markup=False, highlight=False)
