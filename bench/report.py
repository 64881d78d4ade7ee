"""The gateway bench's table: medians over the rounds, ratios, markdown and JSON.

A ``Line`` is one row: a metric of one measurement, per target (column). Its value is
the median over the rounds; an ``added`` line is the median of the per-round difference
from upstream-direct, measured in the same round. Ratios divide the row's medians:
tako / thin proxy, tako tracing on (sample ratio 1.0, then 0.1) / tracing off, tako
Redis / memory (for req/s and chunks/s below 1 is slower; for ms above 1 is slower).

The ingress rows (``ingress_rows``) hold the "tako" column only: req/s of a Responses and
a Messages request next to the same chat request, and each one's gateway time per request,
1/req/s minus upstream-direct's 1/req/s of the chat row in the same round (µs); "vs chat"
divides a row's median by the chat request's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field

DIRECT, PROXY, TAKO, TAKO_REDIS, TAKO_TRACING, TAKO_SAMPLED = (
    "upstream-direct", "thin proxy", "tako", "tako Redis", "tako tracing 1.0",
    "tako tracing 0.1")
COLUMNS = (DIRECT, PROXY, TAKO, TAKO_REDIS, TAKO_TRACING, TAKO_SAMPLED)
RATIOS = {"tako / proxy": (TAKO, PROXY), "tracing 1.0 / off": (TAKO_TRACING, TAKO),
          "tracing 0.1 / off": (TAKO_SAMPLED, TAKO), "Redis / memory": (TAKO_REDIS, TAKO)}
VS_CHAT = "vs chat"

Metrics = dict[str, float]


@dataclass(frozen=True)
class Line:
    label: str
    measurement: str
    metric: str
    unit: str
    added: bool = False  # minus upstream-direct's value of the same round


@dataclass
class Samples:
    """Every measurement's metrics, per (measurement, column), one entry per round."""

    by_cell: dict[tuple[str, str], list[Metrics]] = field(default_factory=dict)

    def add(self, measurement: str, column: str, metrics: Metrics) -> None:
        self.by_cell.setdefault((measurement, column), []).append(metrics)

    def series(self, line: Line, column: str) -> list[float]:
        rounds = self.by_cell.get((line.measurement, column), [])
        values = [metrics[line.metric] for metrics in rounds]
        if not line.added or not values:
            return values
        direct = self.by_cell.get((line.measurement, DIRECT), [])
        return [value - baseline[line.metric] for value, baseline in zip(values, direct,
                                                                         strict=True)]

    def raw(self) -> dict[str, list[Metrics]]:
        """Every metric measured, per "column: measurement", one entry per round."""
        return {f"{column}: {measurement}": rounds
                for (measurement, column), rounds in self.by_cell.items()}

    def errors(self) -> dict[str, int]:
        counted = {f"{column}: {measurement}": int(sum(m.get("errors", 0) for m in rounds))
                   for (measurement, column), rounds in self.by_cell.items()}
        return {cell: count for cell, count in counted.items() if count}


def median(values: Iterable[float]) -> float | None:
    finite = [value for value in values if not math.isnan(value)]
    return statistics.median(finite) if finite else None


def row(line: Line, samples: Samples) -> dict[str, object]:
    series = {column: samples.series(line, column) for column in COLUMNS}
    values = {column: median(series[column]) for column in COLUMNS}
    if line.added:
        values[DIRECT] = None
    ratios = {name: None if line.added else _ratio(values[top], values[bottom])
              for name, (top, bottom) in RATIOS.items()}
    return {"label": line.label, "unit": line.unit, "values": values, "ratios": ratios,
            "samples": {column: runs for column, runs in series.items() if runs}}


def gateway_us(samples: Samples, measurement: str, chat: str) -> list[float]:
    """Per round: tako's time per request of ``measurement`` minus upstream-direct's of the
    ``chat`` row (µs, from req/s at the same concurrency)."""
    tako = samples.by_cell.get((measurement, TAKO), [])
    direct = samples.by_cell.get((chat, DIRECT), [])
    return [1e6 / run["rps"] - 1e6 / baseline["rps"]
            for run, baseline in zip(tako, direct, strict=False)
            if run["rps"] and baseline["rps"]]


def _tako_row(label: str, unit: str, value: float | None, vs_chat: float | None,
              runs: list[float]) -> dict[str, object]:
    values: dict[str, float | None] = dict.fromkeys(COLUMNS)
    values[TAKO] = value
    ratios: dict[str, float | None] = dict.fromkeys(RATIOS)
    ratios[VS_CHAT] = vs_chat
    return {"label": label, "unit": unit, "values": values, "ratios": ratios,
            "samples": {TAKO: runs}}


def ingress_rows(samples: Samples, chat: str, ingresses: dict[str, str],
                 concurrency: int) -> list[dict[str, object]]:
    """req/s and gateway time per request of each ingress (name -> measurement) against
    the ``chat`` measurement, "tako" column only."""
    def rps(measurement: str) -> list[float]:
        return [run["rps"] for run in samples.by_cell.get((measurement, TAKO), [])]

    chat_rps, chat_gateway = median(rps(chat)), median(gateway_us(samples, chat, chat))
    rows = []
    for name, measurement in ingresses.items():
        runs = rps(measurement)
        rows.append(_tako_row(f"{name} c={concurrency}", "req/s", median(runs),
                              _ratio(median(runs), chat_rps), runs))
    rows.append(_tako_row(f"gateway time chat c={concurrency}", "µs", chat_gateway, 1.0,
                          gateway_us(samples, chat, chat)))
    for name, measurement in ingresses.items():
        runs = gateway_us(samples, measurement, chat)
        rows.append(_tako_row(f"gateway time {name} c={concurrency}", "µs", median(runs),
                              _ratio(median(runs), chat_gateway), runs))
    return rows


def _ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None or bottom == 0:
        return None
    return top / bottom


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "ms":
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if unit == "%":
        return f"{value:+.1f} %"
    if unit in ("MiB", "µs"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def markdown(rows: list[dict[str, object]]) -> str:
    header = ["row", *COLUMNS, *RATIOS, VS_CHAT]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in rows:
        values: dict[str, float | None] = entry["values"]  # type: ignore[assignment]
        ratios: dict[str, float | None] = entry["ratios"]  # type: ignore[assignment]
        cells = [f"{entry['label']} ({entry['unit']})"]
        cells += [format_value(values[column], str(entry["unit"])) for column in COLUMNS]
        cells += ["—" if ratios.get(name) is None else f"{ratios[name]:.2f}"
                  for name in (*RATIOS, VS_CHAT)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnotes(result: dict[str, object]) -> str:
    settings: dict[str, object] = result["settings"]  # type: ignore[assignment]
    collected: dict[str, dict[str, int]] = result["collector"]  # type: ignore[assignment]
    errors: dict[str, int] = result["errors"]  # type: ignore[assignment]
    notes = [
        f"{settings['rounds']} round(s), {settings['seconds_per_row']:g} s per row and path "
        f"(streams {settings['stream_seconds_per_row']:g} s), {settings['cpus']} CPUs, "
        f"{result['wall_s']:.0f} s in all; "
        f"RSS at start {result['rss_at_start_mib']:.1f} MiB",
        "collector: " + "; ".join(f"{service} {counts['spans']:,} spans in "
                                  f"{counts['exports']:,} exports ({counts['bytes']:,} bytes)"
                                  for service, counts in sorted(collected.items())),
        f"Redis: {result['redis_keys']} keys written",
        "errors: " + (", ".join(f"{cell} {count}" for cell, count in errors.items())
                      if errors else "none"),
    ]
    return "\n".join(f"- {note}" for note in notes)
