"""Human rendering of command results with rich (JSON lives in :mod:`resultkit.report`)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .report import Status

if TYPE_CHECKING:
    from .commands.doctor import DoctorReport

__all__ = ["render_doctor"]

_STYLE = {
    Status.PASS: ("✔ pass", "green"),
    Status.WARN: ("! warn", "yellow"),
    Status.FAIL: ("✘ fail", "bold red"),
    Status.SKIP: ("- skip", "dim"),
}


def render_doctor(report: DoctorReport, console: Console) -> None:
    """Print a doctor report: one row per check, its fix underneath, a summary line."""
    console.print(Text.assemble(("resultkit doctor", "bold"), "  ", report.backend or "(none)"))
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
