"""Human rendering of command results with rich (JSON lives in :mod:`resultkit.report`)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from .report import Status

if TYPE_CHECKING:
    from .commands.bench import BenchReport
    from .commands.cleanup import CleanupReport
    from .commands.config import ConfigCheckReport
    from .commands.cutover import CutoverReport
    from .commands.doctor import DoctorReport
    from .commands.erase import EraseReport
    from .commands.export import ExportReport
    from .commands.failures import FailuresReport
    from .commands.find import FindReport
    from .commands.migrate import MigrationReport
    from .commands.retry import RetryReport
    from .commands.show import ShowReport
    from .commands.stats import StatsReport

__all__ = [
    "progress_bar",
    "render_bench",
    "render_cleanup",
    "render_config_check",
    "render_cutover",
    "render_doctor",
    "render_erase",
    "render_export",
    "render_failures",
    "render_find",
    "render_migration",
    "render_retry",
    "render_show",
    "render_stats",
]

_STYLE = {
    Status.PASS: ("✔ pass", "green"),
    Status.WARN: ("! warn", "yellow"),
    Status.FAIL: ("✘ fail", "bold red"),
    Status.SKIP: ("- skip", "dim"),
}


def render_doctor(report: DoctorReport, console: Console, title: str = "resultkit doctor") -> None:
    """Print a doctor report: one row per check, its fix underneath, a summary line."""
    console.print(Text.assemble((title, "bold"), "  ", report.backend or "(none)"))
    table = Table(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("id", no_wrap=True, style="cyan")
    table.add_column("message", overflow="fold")
    for check in report.checks:
        label, style = _STYLE[check.status]
        body = Text(check.message)
        if check.fix and (check.status in (Status.WARN, Status.FAIL) or check.data.get("info")):
            body.append("\nfix: ", style="bold dim")
            body.append(check.fix, style="dim")
        table.add_row(Text(label, style=style), check.id, body)
    console.print(table)
    counts = Counter(c.status for c in report.checks)
    verdict = Text("OK", style="bold green") if report.ok else Text("FAILED", style="bold red")
    console.print(
        Text.assemble(
            verdict,
            f"  {counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, "
            f"{counts[Status.FAIL]} failed, {counts[Status.SKIP]} skipped "
            f"in {report.seconds:.1f} s",
        )
    )


def render_migration(report: MigrationReport, console: Console) -> None:
    """Print a migration summary, then the records that failed or differ."""
    title = "resultkit migrate (dry run)" if report.dry_run else "resultkit migrate"
    console.print(Text.assemble((title, "bold"), f"  {report.source} → {report.target}"))
    if report.dry_run:
        would = sum(report.by_state.values())
        console.print(
            f"would copy {would:,} results ({report.bytes:,} bytes), "
            f"about {report.estimated_seconds or 0:.0f} s; nothing was written"
        )
        table = Table("state", "results", box=None)
        for state, count in report.by_state.items():
            table.add_row(state, f"{count:,}")
        console.print(table)
    else:
        line = (
            f"copied {report.copied:,}, skipped {report.skipped:,} (already there), "
            f"expired {report.expired:,}, failed {report.failed:,}"
        )
        if report.verified or report.mismatched or report.unverified:
            line += f"; verified {report.verified:,}, mismatched {report.mismatched:,}"
            if report.unverified:
                line += f", unverified {report.unverified:,}"
        if report.deleted or report.kept:
            line += f"; deleted {report.deleted:,} from the source"
            if report.kept:
                line += f", kept {report.kept:,} there"
        console.print(line + f" in {report.seconds:.1f} s")
        console.print(
            f"scanned {report.scanned:,}: filtered out {report.filtered:,}, "
            f"vanished from the source {report.vanished:,}"
            + (f"; scanned again {report.rescans:,} times" if report.rescans else "")
            + (f"; {report.unaccounted:,} UNACCOUNTED" if report.unaccounted else ""),
            style="dim",
        )
    for note in report.notes:
        console.print(Text.assemble(("note ", "bold"), note))
    if not report.complete:
        missing = "an unknown number of" if report.missing is None else f"{report.missing:,}"
        console.print(
            Text.assemble(
                ("INCOMPLETE ", "bold red"),
                f"{missing} results of the source are not in the target; finish with: "
                f"{report.resume_command}",
            )
        )
    for failure in report.failures:
        console.print(
            Text.assemble(
                ("failed ", "bold red"), f"{failure['kind']} {failure['id']}: ", failure["error"]
            )
        )
    for mismatch in report.mismatches:
        console.print(
            Text.assemble(
                ("mismatch ", "bold red"),
                f"{mismatch['kind']} {mismatch['id']}: ",
                ", ".join(mismatch["fields"]),
            )
        )
    for item in report.unverified_records:
        console.print(
            Text.assemble(
                ("unverified ", "bold yellow"), f"{item['kind']} {item['id']}: ", item["reason"]
            )
        )
    for item in report.kept_records:
        console.print(
            Text.assemble(
                ("kept ", "bold"), f"{item['kind']} {item['id']} in the source: ", item["reason"]
            )
        )
    if (report.failed or report.mismatched) and not report.dry_run:
        console.print("the records above were not copied as they are; the rest were")
    if report.unverified and not report.dry_run:
        console.print("the unverified records were copied, but their copies were not compared")


def render_stats(report: StatsReport, console: Console) -> None:
    """Print what is stored: states, tasks, ages, sizes."""
    details = report.details
    console.print(Text.assemble(("resultkit stats", "bold"), "  ", report.backend))
    states = Table("state", "results", box=None, title=None)
    for state, count in report.by_state.items():
        states.add_row(state, f"{count:,}")
    if report.unreadable:
        states.add_row("(unreadable)", f"{report.unreadable:,}")
    states.add_row(Text("total", style="bold"), Text(f"{report.total:,}", style="bold"))
    console.print(states)
    offloaded = details.get("offloaded")
    if offloaded:
        console.print(
            f"offloaded: {offloaded['objects']:,} objects, {offloaded['bytes']:,} bytes "
            f"in {offloaded['url']}"
        )
    if details.get("by_task"):
        tasks = Table("task", "results", box=None)
        for task, count in list(details["by_task"].items())[:15]:
            tasks.add_row(task, f"{count:,}")
        console.print(tasks)
    ages = details.get("age", {})
    if ages:
        console.print("age: " + ", ".join(f"{label} {count:,}" for label, count in ages.items()))
    sizes = details.get("sizes", {})
    if sizes:
        console.print(
            f"size: p50 {sizes['p50']:,} B, p95 {sizes['p95']:,} B, p99 {sizes['p99']:,} B, "
            f"max {sizes['max']:,} B; {details.get('bytes', 0):,} bytes in all"
        )
    for item in details.get("largest", [])[:3]:
        console.print(f"  largest: {item['id']} ({item['task'] or 'no name'}) {item['bytes']:,} B")
    if details.get("no_ttl") is not None:
        console.print(f"keys without TTL: {details['no_ttl']:,}")
    console.print(f"past their lifetime, still stored: {details.get('past_lifetime', 0):,}")
    if details.get("encrypted_by_key"):
        keys = ", ".join(f"{k} ({n:,})" for k, n in details["encrypted_by_key"].items())
        console.print(f"encrypted, by key: {keys}")
    lost = details.get("undecryptable") or {}
    if lost:
        keys = ", ".join(f"{k} ({n:,})" for k, n in lost.items())
        console.print(
            f"[red]unreadable: {sum(lost.values()):,} results are encrypted under keys this "
            f"process does not have: {keys}[/red]"
        )
    console.print(f"{report.groups:,} group results; {report.seconds:.1f} s")


class RateColumn(ProgressColumn):
    """Records per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f}/s", style="cyan")


@contextlib.contextmanager
def progress_bar(console: Console, label: str) -> Iterator[Callable[[Any], None]]:
    """A transient progress bar: one line per kind, with count, rate and ETA."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[Any, Any] = {}

        def update(event: Any) -> None:
            if event.kind not in tasks:
                tasks[event.kind] = bar.add_task(f"{label} {event.kind.value}s", total=event.total)
            bar.update(tasks[event.kind], completed=event.done, total=event.total)

        yield update


def render_cleanup(report: CleanupReport, console: Console) -> None:
    """Print what a cleanup deleted (or would), by state and by task."""
    title = "resultkit cleanup (dry run)" if report.dry_run else "resultkit cleanup"
    console.print(Text.assemble((title, "bold"), "  ", report.backend))
    console.print("policy: " + "; ".join(report.policy), style="dim")
    if report.dry_run:
        line = f"would delete {report.would_delete:,}, keep {report.kept:,}"
    else:
        line = f"deleted {report.deleted:,}, kept {report.kept:,}"
        if report.archive:
            line += f", archived {report.archived:,} to {report.archive}"
    if report.ttl_fixed:
        line += f", {'would give' if report.dry_run else 'gave'} {report.ttl_fixed:,} keys a TTL"
    if report.unreadable:
        line += f" ({report.unreadable:,} unreadable results kept)"
    console.print(line + f" in {report.seconds:.1f} s")
    if report.offload:
        verb = "would delete" if report.dry_run else "deleted"
        console.print(
            f"offloaded objects in {report.offload}: {verb} {report.offload_deleted:,} "
            f"orphans, kept {report.offload_kept:,}"
        )
    if report.by_state:
        table = Table("state", "results", box=None)
        for state, count in report.by_state.items():
            table.add_row(state, f"{count:,}")
        console.print(table)
    if report.by_task:
        table = Table("task", "results", box=None)
        for task, count in list(report.by_task.items())[:20]:
            table.add_row(task, f"{count:,}")
        console.print(table)


def render_cutover(report: CutoverReport, console: Console) -> None:
    """Print where results live during a cutover, and whether old can go."""
    console.print(Text.assemble(("resultkit cutover status", "bold")))
    console.print(f"new: {report.new}\nold: {report.old}")
    table = Table("", "only in old", "only in new", "in both", box=None)
    for kind in report.both:
        table.add_row(
            kind,
            f"{report.only_old[kind]:,}",
            f"{report.only_new[kind]:,}",
            f"{report.both[kind]:,}",
        )
    console.print(table)
    if report.old_can_be_dropped:
        console.print(Text("old can be dropped: every result in it is also in new", style="green"))
    else:
        console.print(
            Text(
                "old cannot be dropped yet: copy what only old has with "
                "`resultkit migrate OLD NEW --verify` (or let it expire)",
                style="yellow",
            )
        )


def render_bench(report: BenchReport, console: Console) -> None:
    """A table: one row per case, throughput and p50/p95/p99 per operation."""
    table = Table(title="resultkit bench", box=None, title_justify="left")
    table.add_column("case")
    for op in ("store", "fetch", "roundtrip"):
        table.add_column(f"{op}/s", justify="right")
        table.add_column(f"{op} p50/p95/p99 ms", justify="right")
    for case in report.cases:
        cells = [
            case.label + (f"  (Celery's, vs {case.counterpart_of})" if case.counterpart_of else "")
        ]
        for op in ("store", "fetch", "roundtrip"):
            lat = case.latency_ms.get(op, {})
            cells += [
                f"{case.throughput.get(op, 0):,.0f}",
                f"{lat.get('p50', 0):.2f}/{lat.get('p95', 0):.2f}/{lat.get('p99', 0):.2f}",
            ]
        table.add_row(*cells)
    console.print(table)
    console.print(f"{len(report.cases)} cases in {report.seconds:.1f} s", style="dim")


def render_config_check(report: ConfigCheckReport, console: Console) -> None:
    """The audit's findings, in the doctor's format."""
    from .commands.doctor import DoctorReport

    report_view = DoctorReport(backend=report.app, checks=report.checks)
    render_doctor(report_view, console, title="resultkit config check")


def _filters_line(filters: Any) -> str:
    """The filters given, as one line (what was asked, never what was found)."""
    parts = []
    for key, value in filters.items():
        if key in ("kind", "order") or value in (None, [], ""):
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{key} {shown}")
    return "; ".join(parts) or "none (every result)"


def render_export(report: ExportReport, console: Console) -> None:
    """Print how many results an export wrote, and where."""
    console.print(Text.assemble(("resultkit export", "bold"), "  ", report.backend))
    console.print("filters: " + _filters_line(report.filters), style="dim")
    console.print(
        f"exported {report.exported:,} results to {report.path} ({report.format}) "
        f"in {report.seconds:.1f} s"
    )
    if report.damaged:
        console.print(
            f"NOT COMPLETE: {report.damaged:,} records of the source are damaged and were "
            "not exported (they may or may not match the filters): "
            + "; ".join(report.damaged_examples)
            + ("; ..." if report.damaged > len(report.damaged_examples) else ""),
            style="bold red",
        )
        console.print(
            f"resultkit migrate {report.backend} TARGET --verify lists every damaged record",
            style="dim",
        )
    if report.format == "jsonl":
        console.print(f"restore with: resultkit migrate jsonl://{report.path} TARGET", style="dim")


def render_erase(report: EraseReport, console: Console) -> None:
    """Print what an erasure matched and deleted (or, dry, would delete)."""
    title = "resultkit erase (dry run)" if report.dry_run else "resultkit erase"
    console.print(Text.assemble((title, "bold"), "  ", report.backend))
    console.print("filters: " + _filters_line(report.filters), style="dim")
    if report.dry_run:
        line = f"matched {report.matched:,}: would delete {report.matched:,}; deleted nothing"
    else:
        line = f"matched {report.matched:,}, deleted {report.deleted:,}"
        if report.archive:
            line += f", archived {report.archived:,} to {report.archive}"
        if report.changed:
            line += f" ({report.changed:,} changed or gone meanwhile, left as they were)"
        if report.objects_deleted:
            line += f"; {report.objects_deleted:,} offloaded payloads deleted from object storage"
    console.print(line + f" in {report.seconds:.1f} s")
    if report.audit_log:
        console.print(f"audit line appended to {report.audit_log}", style="dim")
    if report.by_task:
        table = Table("task", "results", box=None)
        for task, count in list(report.by_task.items())[:20]:
            table.add_row(task, f"{count:,}")
        console.print(table)


def render_retry(report: RetryReport, console: Console) -> None:
    """Print each task sent again: old id, new id (or, dry, what would be sent)."""
    title = "resultkit retry (dry run)" if report.dry_run else "resultkit retry"
    console.print(Text.assemble((title, "bold"), "  ", report.backend))
    table = Table("task id", "name", "queue", "new task id", box=None)
    for task in report.tasks:
        table.add_row(
            task.task_id,
            task.name,
            task.queue or "(default)",
            task.new_task_id or "(not sent)",
        )
    console.print(table)
    verb = "would send" if report.dry_run else "sent"
    count = len(report.tasks) if report.dry_run else report.sent
    console.print(f"{verb} {count:,} tasks through {report.broker}")


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_find(report: FindReport, console: Console) -> None:
    """Print a page of results as a table, then the cursor to the next page."""
    for note in report.notes:
        console.print(Text("note: " + note, style="dim"), soft_wrap=True)
    if report.created is not None:
        made = ", ".join(report.created) or "none (every recommended index exists)"
        console.print(Text.assemble(("created indexes: ", "bold"), made))
    if report.plan is not None:
        console.print(Text("plan", style="bold"))
        for line in report.plan:
            console.print("  " + line, markup=False, highlight=False)
    if report.indexes:
        console.print(Text("recommended indexes", style="bold"))
        for index in report.indexes:
            mark = "✔" if index["exists"] else "✘ missing"
            line = f"  {mark} {index['name']} on {index['table']}({', '.join(index['columns'])})"
            console.print(line + f" for {index['serves']}", markup=False, highlight=False)
        if not all(index["exists"] for index in report.indexes):
            console.print("  create them with: resultkit find --create-indexes [URL | -A APP]")
    if report.created is not None:
        return
    table = Table(box=None, pad_edge=False, expand=False)
    for column in ("task_id", "status", "name", "date_done", "worker", "exception"):
        table.add_column(column, no_wrap=column != "exception", overflow="fold")
    for row in report.results:
        failure = f"{row['exception']}: {row['message']}" if row.get("exception") else ""
        table.add_row(
            row["task_id"],
            row.get("status") or (row["kind"] if row["kind"] != "task" else "?"),
            row.get("name") or "",
            (row.get("date_done") or "")[:26],
            row.get("worker") or "",
            _short(failure) if failure else (row.get("unreadable") or ""),
        )
    console.print(table)
    tail = f"{len(report.results)} results ({report.scanned} read, {report.seconds:.3f}s)"
    console.print(Text(tail, style="dim"))
    if report.cursor:
        # One line, however narrow the terminal: the cursor is copied as it is.
        console.print(
            Text.assemble(("next page: ", "bold"), "--cursor ", report.cursor),
            soft_wrap=True,
        )


def render_show(report: ShowReport, console: Console) -> None:
    """Print one result: state, dates, extended fields, exception, traceback, family."""
    if not report.found:
        console.print(f"no result {report.task_id} at {report.backend}", markup=False)
        return
    data = report.as_dict()
    fields = report.fields
    console.print(Text.assemble((f"{report.kind} ", "bold"), report.task_id))
    rows: list[tuple[str, Any]] = [
        ("status", fields.get("status")),
        ("name", fields.get("name")),
        ("date_done", fields.get("date_done")),
        ("worker", fields.get("worker")),
        ("queue", fields.get("queue")),
        ("retries", fields.get("retries")),
        ("args", fields.get("args")),
        ("kwargs", fields.get("kwargs")),
        ("group_id", fields.get("group_id")),
        ("parent_id", fields.get("parent_id")),
        ("serializer", report.serializer),
        ("compression", report.compression),
    ]
    if report.sealed:
        state = "opened" if report.sealed["opened"] else "sealed (no key here opens it)"
        rows.append(("encrypted", f"key {report.sealed['key_id']}, {state}"))
    if report.lifetime == "never":
        rows.append(("lifetime", "never expires"))
    elif report.lifetime_s is not None:
        how = "TTL" if report.lifetime == "ttl" else "date_done + retention, at the next cleanup"
        rows.append(("lifetime", f"{data['lifetime_s']} s left ({how})"))
    table = Table(box=None, show_header=False, pad_edge=False, expand=False)
    table.add_column("field", style="cyan", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        if value is not None:
            table.add_row(name, value if isinstance(value, str) else repr(value))
    if report.unreadable:
        table.add_row("unreadable", report.unreadable)
    elif report.exception:
        table.add_row("exception", f"{report.exception['type']}: {report.exception['message']}")
    elif report.kind == "task":
        table.add_row("result", _short(fields.get("result"), 2000))
    console.print(table)
    if fields.get("traceback"):
        console.print(Text("traceback", style="bold"))
        console.print(str(fields["traceback"]).rstrip(), markup=False, highlight=False)
    if report.children:
        console.print(Text("children", style="bold"))
        for child in report.children:
            console.print(f"  {child['task_id']}  {child['status'] or 'not stored'}", markup=False)
    if report.group:
        label = f"group {report.group['group_id']}"
        if report.group.get("stored") is False:
            label += " (no group record stored)"
        console.print(Text(label, style="bold"))
        for member in report.group["members"]:
            state = member["status"] or "not stored"
            console.print(f"  {member['task_id']}  {state}", markup=False)


def render_failures(report: FailuresReport, console: Console) -> None:
    """Print failures grouped by task and exception, most first."""
    for note in report.notes:
        console.print(Text("note: " + note, style="dim"), soft_wrap=True)
    table = Table(box=None, pad_edge=False, expand=False)
    for column in ("count", "task", "exception", "first seen", "last seen", "example"):
        table.add_column(column, no_wrap=column != "example", overflow="fold")
    for group in report.groups:
        table.add_row(
            str(group.count),
            group.name or "(no name)",
            group.exception or "(none)",
            (group.first_seen or "")[:19],
            (group.last_seen or "")[:19],
            f"{group.example_id}: {_short(group.example_message)}",
        )
    console.print(table)
    console.print(Text(f"{report.total} failures in {len(report.groups)} groups", style="dim"))
