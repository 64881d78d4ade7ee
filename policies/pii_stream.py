"""Guarding streamed text chunk by chunk.

``StreamRedactor.feed`` returns the part of the stream that is final: everything before
the earliest point where a PII or secret match could still be growing. That held tail is
small: the trailing run of characters a match can consist of (a word, a number group, a
labelled secret's last ~80 characters), or an unterminated private key block. ``flush``
returns the rest. The concatenation of all outputs equals ``PiiFilter.apply`` of the whole
text, whatever the chunking; in ``block`` mode the first finding raises PolicyDenied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tako.policies.pii_detectors import Candidate, candidates, select, stream_hold_start

if TYPE_CHECKING:
    from tako.policies.pii import PiiFilter

# Characters kept before the held tail so look-behind checks see what preceded it (the
# longest look-behind is "version: " before an IPv4-like version number).
CONTEXT_CHARS = 16


class StreamRedactor:
    def __init__(self, guard: PiiFilter) -> None:
        self._guard = guard
        self._context = ""
        self._pending = ""

    @property
    def held(self) -> int:
        """How many characters are held back right now."""
        return len(self._pending)

    def feed(self, chunk: str) -> str:
        if not self._guard.enabled:
            return chunk
        self._pending += chunk
        text = self._context + self._pending
        base = len(self._context)
        found, spans = candidates(self._guard.detectors, text, base)
        cut = len(text)
        for detector in self._guard.detectors:
            cut = min(cut, stream_hold_start(detector, text, base))
        moved = True
        while moved:
            moved = False
            for start, end in spans:
                if start < cut < end:
                    cut = start
                    moved = True
        return self._emit(text, base, cut, [c for c in found if c.match_end <= cut])

    def flush(self) -> str:
        if not self._guard.enabled:
            return ""
        text = self._context + self._pending
        base = len(self._context)
        found, _ = candidates(self._guard.detectors, text, base)
        return self._emit(text, base, len(text), found)

    def _emit(self, text: str, base: int, cut: int, found: list[Candidate]) -> str:
        out = self._guard.render(text, base, cut, select(found)) if cut > base else ""
        self._context = text[max(0, cut - CONTEXT_CHARS):cut] if cut > base else self._context
        self._pending = text[cut:]
        return out
