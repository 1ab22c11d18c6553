"""Charts of a bench report: PNG or SVG (matplotlib), or an HTML page around the SVG."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

from .drivers import import_driver
from .errors import UsageError

if TYPE_CHECKING:
    from .commands.bench import BenchReport

__all__ = ["write_plot"]

_OPS = ("store", "fetch", "roundtrip")


def _figure(report: BenchReport) -> object:
    import_driver("matplotlib", "plot", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [c.label for c in report.cases]
    height = max(3.0, 0.6 * len(labels) + 1.5)
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, height), constrained_layout=True)
    bar = 0.8 / len(_OPS)
    positions = range(len(labels))
    for index, op in enumerate(_OPS):
        left.barh(
            [p + index * bar for p in positions],
            [c.throughput.get(op, 0) for c in report.cases],
            height=bar,
            label=op,
        )
        right.barh(
            [p + index * bar for p in positions],
            [c.latency_ms.get(op, {}).get("p95", 0) for c in report.cases],
            height=bar,
            label=f"{op} p95",
        )
        right.scatter(
            [c.latency_ms.get(op, {}).get("p50", 0) for c in report.cases],
            [p + index * bar for p in positions],
            marker="|",
            color="black",
            zorder=3,
        )
    for axis in (left, right):
        axis.set_yticks([p + bar for p in positions])
        axis.invert_yaxis()
        axis.legend(loc="best", fontsize="small", framealpha=0.6)
        axis.grid(axis="x", alpha=0.3)
    left.set_yticklabels(labels, fontsize="small")
    right.set_yticklabels([])
    left.set_xlabel("operations per second (higher is better)")
    right.set_xlabel("latency ms: bar p95, tick p50 (lower is better)")
    left.set_title("Throughput")
    right.set_title("Latency")
    return figure


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """Draw *report* to *path*; the extension chooses PNG, SVG or HTML."""
    from .boundary import translating

    with translating(str(path), "write the plot"):
        return _write_plot(report, Path(path))


def _write_plot(report: BenchReport, path: Path) -> Path:
    suffix = path.suffix.lower()
    if suffix not in (".png", ".svg", ".html", ".htm"):
        raise UsageError(f"--plot {path.name}: use a .png, .svg or .html file name")
    figure = _figure(report)
    if suffix in (".png", ".svg"):
        figure.savefig(path, dpi=120)  # type: ignore[attr-defined]
        return path
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")  # type: ignore[attr-defined]
    rows = "".join(
        "<tr><td>{}</td>{}</tr>".format(
            html.escape(c.label),
            "".join(
                f"<td>{c.throughput.get(op, 0):,.0f}/s</td>"
                f"<td>{c.latency_ms.get(op, {}).get('p50', 0)} / "
                f"{c.latency_ms.get(op, {}).get('p95', 0)} / "
                f"{c.latency_ms.get(op, {}).get('p99', 0)} ms</td>"
                for op in _OPS
            ),
        )
        for c in report.cases
    )
    heads = "".join(f"<th>{op}</th><th>{op} p50 / p95 / p99</th>" for op in _OPS)
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>resultkit bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;text-align:right}"
        "td:first-child{text-align:left}</style><h1>resultkit bench</h1>"
        f"{buffer.getvalue()}<table><tr><th>case</th>{heads}</tr>{rows}</table>"
    )
    return path
