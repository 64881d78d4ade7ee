"""Load generators: wrk for non-streamed requests, an aiohttp client for streams.

wrk posts one body file (``-t1``, ``--latency``) for a number of seconds, or until a
count of answers (``wrk_count``). wrk does not parse SSE, so ``measure_streams`` runs
``concurrency`` aiohttp streams back to back for a number of seconds and times each one:
TTFT is the time from sending the request to the first received bytes that complete a
``"content":"`` field; a stream counts as an error unless it is a 200 carrying exactly the
expected number of content chunks.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

CONTENT_MARKER = b'"content":"'
WRK_COUNT_SLICE_S = 1


def _lua_script(body_path: Path, api_key: str, stop_after: int | None) -> str:
    script = (f'local body_file = io.open("{body_path}", "rb")\n'
              "wrk.body = body_file:read(\"*a\")\n"
              "body_file:close()\n"
              'wrk.method = "POST"\n'
              'wrk.headers["Content-Type"] = "application/json"\n'
              f'wrk.headers["Authorization"] = "Bearer {api_key}"\n')
    if stop_after is not None:
        script += ("local answers = 0\n"
                   "function response(status, headers, body)\n"
                   "  answers = answers + 1\n"
                   f"  if answers >= {stop_after} then wrk.thread:stop() end\n"
                   "end\n")
    return script


def _latency_ms(out: str, label: str) -> float:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def _error_count(out: str) -> int:
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    return errors + (sum(int(n) for n in sockets.groups()) if sockets else 0)


def parse_wrk(out: str) -> dict[str, float]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    answered = re.search(r"(\d+) requests in", out)
    return {"rps": float(rps.group(1)) if rps else float("nan"),
            "p50": _latency_ms(out, "50%"), "p99": _latency_ms(out, "99%"),
            "requests": float(answered.group(1)) if answered else 0.0,
            "errors": float(_error_count(out))}


def _run_wrk(url: str, body_path: Path, api_key: str, connections: int, seconds: int,
             stop_after: int | None = None) -> dict[str, float]:
    script = body_path.with_suffix(f".{stop_after or 'timed'}.lua")
    script.write_text(_lua_script(body_path, api_key, stop_after))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def wrk_timed(url: str, body_path: Path, api_key: str, connections: int,
              seconds: float) -> dict[str, float]:
    """req/s, p50 and p99 (ms), answers and errors of ``seconds`` (whole, at least 1)."""
    return _run_wrk(url, body_path, api_key, connections, max(1, round(seconds)))


def wrk_count(url: str, body_path: Path, api_key: str, connections: int,
              answers: int) -> dict[str, float]:
    """Requests until ``answers`` answers came back (a few more may have been in flight):
    wrk runs of ``WRK_COUNT_SLICE_S``, each stopping at the answers still missing (wrk's
    ``thread:stop()`` ends the sending, not the run's clock)."""
    answered, errors = 0.0, 0.0
    while answered < answers:
        run = _run_wrk(url, body_path, api_key, connections, WRK_COUNT_SLICE_S,
                       stop_after=answers - int(answered))
        if not run["requests"]:
            raise RuntimeError(f"no answers from {url}")
        answered += run["requests"]
        errors += run["errors"]
    return {"requests": answered, "errors": errors}


@dataclass
class StreamTally:
    """Per-stream timings (seconds) and counts of one ``measure_streams`` run."""

    ttft: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    chunks: int = 0
    errors: int = 0
    elapsed: float = 0.0

    def summary(self) -> dict[str, float]:
        streams = len(self.total)
        elapsed = self.elapsed or float("nan")
        return {"ttft_p50": _median_ms(self.ttft), "total_p50": _median_ms(self.total),
                "chunks_per_s": self.chunks / elapsed, "streams_per_s": streams / elapsed,
                "streams": float(streams), "errors": float(self.errors)}


def _median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1000 if seconds else float("nan")


async def _one_stream(session: aiohttp.ClientSession, url: str, body: bytes,
                      expected_chunks: int, tally: StreamTally) -> None:
    started = time.perf_counter()
    first_token_at = None
    chunks, tail = 0, b""
    async with session.post(url, data=body) as answer:
        async for data in answer.content.iter_any():
            window = tail + data
            chunks += window.count(CONTENT_MARKER)
            tail = window[1 - len(CONTENT_MARKER):]
            if first_token_at is None and chunks:
                first_token_at = time.perf_counter()
        status = answer.status
    if status != 200 or chunks != expected_chunks or first_token_at is None:
        tally.errors += 1
        return
    tally.ttft.append(first_token_at - started)
    tally.total.append(time.perf_counter() - started)
    tally.chunks += chunks


async def _stream_worker(session: aiohttp.ClientSession, url: str, body: bytes,
                         expected_chunks: int, deadline: float, tally: StreamTally) -> None:
    while time.perf_counter() < deadline:
        try:
            await _one_stream(session, url, body, expected_chunks, tally)
        except aiohttp.ClientError:
            tally.errors += 1


async def _measure_streams(url: str, body: bytes, api_key: str, expected_chunks: int,
                           concurrency: int, seconds: float) -> StreamTally:
    tally = StreamTally()
    headers = {"authorization": f"Bearer {api_key}", "content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_stream_worker(session, url, body, expected_chunks, deadline,
                                              tally) for _ in range(concurrency)))
        tally.elapsed = time.perf_counter() - started
    return tally


def measure_streams(url: str, body: bytes, api_key: str, expected_chunks: int,
                    concurrency: int, seconds: float) -> dict[str, float]:
    """TTFT and total p50 (ms), chunks/s and streams/s of ``concurrency`` stream loops."""
    tally = uvloop.run(_measure_streams(url, body, api_key, expected_chunks, concurrency,
                                        seconds))
    return tally.summary()
