"""A run's report as markdown: the Prefect artifact and `kimidocs analyze`'s closing words."""

from __future__ import annotations

from pathlib import Path

from kimidocs.run.pipeline import DocumentOutcome, RunReport


def _name(outcome: DocumentOutcome) -> str:
    return Path(outcome.path).name.replace("|", "\\|")


def report_markdown(report: RunReport, *, top: int = 5) -> str:
    """Counts per status, tokens, cache-hit share, cost, the slowest and costliest documents, failures."""
    lines = [
        f"# kimidocs run `{report.run_id[:12]}`",
        "",
        f"- status: **{report.status}**" + (f" ({report.message})" if report.message else ""),
        f"- backend: `{report.backend}`"
        + (" (emulated: not real Kimi output)" if report.backend == "emulator" else ""),
        f"- model: `{report.model}`; database: `{report.db}`"
        + (f"\n- **{report.model_note}**" if report.model_note else ""),
        f"- documents: {report.count('ok')} ok, {report.count('unchanged')} unchanged, "
        f"{report.count('skipped')} skipped, {report.count('failed')} failed, "
        f"{report.count('planned')} planned",
        f"- tokens: {report.prompt_tokens:,} prompt ({report.cached_tokens:,} cached, "
        f"{report.cache_hit_share:.1%} cache hits), "
        f"{sum(o.completion_tokens for o in report.outcomes):,} output",
        f"- cost: ${report.cost_usd:.4f}"
        + (f" (estimated ${report.cost_usd_est:.4f})" if report.cost_usd_est else ""),
        f"- wall time: {report.seconds:.1f} s",
    ]
    if report.packed_requests_saved:
        lines.append(
            f"- packing: {report.packed_requests_saved:,} requests saved "
            "(small documents sent several to a request)"
        )
    lines.append("")
    if report.scheduling:
        lines += _scheduling(report.scheduling, top)
    done = [o for o in report.outcomes if o.status == "ok"]
    if done:
        lines += ["## Slowest documents", "", "| document | seconds | pages | calls |", "|---|---|---|---|"]
        for o in sorted(done, key=lambda o: -o.seconds)[:top]:
            lines.append(f"| {_name(o)} | {o.seconds:.2f} | {o.pages} | {o.calls} |")
        lines += [
            "",
            "## Most expensive documents",
            "",
            "| document | cost $ | prompt tokens | cached |",
            "|---|---|---|---|",
        ]
        for o in sorted(done, key=lambda o: -o.cost_usd)[:top]:
            lines.append(f"| {_name(o)} | {o.cost_usd:.5f} | {o.prompt_tokens:,} | {o.cached_tokens:,} |")
        lines.append("")
    bad = [o for o in report.outcomes if o.status in ("failed", "skipped")]
    if bad:
        lines += ["## Failures and skips", "", "| document | status | error | reason |", "|---|---|---|---|"]
        for o in bad:
            reason = (o.message or "").replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {_name(o)} | {o.status} | {o.error_type or ''} | {reason} |")
        lines.append("")
    return "\n".join(lines)


def _scheduling(decisions: tuple[str, ...], top: int) -> list[str]:
    """The prefix-cache decisions: the run's warm-up first, then up to `top` groups and a count."""
    shown = list(decisions[: top + 1])
    lines = ["## Prefix cache scheduling", "", *(f"- {d}" for d in shown)]
    if len(decisions) > len(shown):
        alone = sum(1 for d in decisions[len(shown) :] if "first call alone" in d)
        rest = len(decisions) - len(shown)
        lines.append(f"- and {rest} more groups ({alone} with their first call alone)")
    return [*lines, ""]
