"""Detectors for PII and secrets: one regular expression per kind plus a validity check.

Each detector also states which characters a match can consist of and how long a match
can be; the stream redactor uses that to hold back only the tail of a stream that could
still become (part of) a match.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    charset: frozenset[str]  # every character a match can contain
    max_len: int  # no match is longer than this
    priority: int  # breaks ties between overlapping matches that start together
    validate: Callable[[str], bool] = lambda value: True
    group: int | str = 0  # the part of the match that is sensitive
    # A match of this shape that fails validation still claims its text, so that no
    # weaker detector reads part of it (an IBAN with a typo is not a phone number).
    claims_when_invalid: bool = False
    # Every match starts with one of these: a stream only holds back from one of them.
    prefixes: tuple[str, ...] = ()
    chars: str = ""  # ``charset`` as a string, for str.rstrip

    def __post_init__(self) -> None:
        object.__setattr__(self, "chars", "".join(sorted(self.charset)))


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: str  # "" for a claim: text held by an invalid match, left unchanged
    start: int  # sensitive value
    end: int
    match_start: int  # whole regex match (labels included)
    match_end: int
    priority: int


def _chars(*ranges: str) -> frozenset[str]:
    out: set[str] = set()
    for item in ranges:
        if len(item) == 3 and item[1] == "-" and item[0].isalnum() and item[2].isalnum():
            out.update(chr(c) for c in range(ord(item[0]), ord(item[2]) + 1))
        else:
            out.update(item)
    return frozenset(out)


DIGITS = _chars("0-9")
ALNUM = _chars("a-z", "A-Z", "0-9")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card_ok(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits)


def _iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _phone_ok(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if value.startswith("00"):
        digits = digits[2:]
    if value.startswith(("+", "00")):
        return 8 <= len(digits) <= 15
    if value.startswith("0"):
        return 9 <= len(digits) <= 12
    return len(digits) == 10


def _ipv6_ok(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    groups = [g for g in re.split(r"[:.]", value) if g]
    return len(groups) >= 3 or any(len(g) >= 3 for g in groups)


def _jwt_ok(value: str) -> bool:
    header = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and ("alg" in decoded or "typ" in decoded)


def _openai_ok(value: str) -> bool:
    body = re.sub(r"^sk-(?:proj-|svcacct-|admin-)?", "", value)
    return (
        len(body) >= 20
        and re.search(r"\d", body) is not None
        and re.search(r"[a-z]", body) is not None
        and re.search(r"[A-Z]", body) is not None
    )


# Private key blocks: the body is any text up to the END line, at most this long; a block
# whose END line never comes is redacted up to that length (or the end of the text).
PRIVATE_KEY_BODY_MAX = 16384
PRIVATE_KEY_HEADER = r"-----BEGIN (?:[A-Z0-9]{1,12} ){0,4}PRIVATE KEY(?: BLOCK)?-----"
PRIVATE_KEY_FOOTER = r"-----END (?:[A-Z0-9]{1,12} ){0,4}PRIVATE KEY(?: BLOCK)?-----"
PRIVATE_KEY_MARKER_MAX = 100  # longer than any header or footer line
PRIVATE_KEY_RE = re.compile(
    PRIVATE_KEY_HEADER
    + rf"(?:[\s\S]{{0,{PRIVATE_KEY_BODY_MAX}}}?(?P<footer>{PRIVATE_KEY_FOOTER})"
    + rf"|[\s\S]{{0,{PRIVATE_KEY_BODY_MAX}}})"
)
PRIVATE_KEY_HEADER_RE = re.compile(PRIVATE_KEY_HEADER)
PRIVATE_KEY_PARTIAL_RE = re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY(?: BLOCK)?-{0,4})?\Z")

_NOT_WORD_BEFORE = r"(?<![\w+\-./])"
_PHONE = (
    # international: +CC or 00CC, then groups
    r"(?:\+[1-9]\d{0,3}|00[1-9]\d{0,3}(?=[ .-]))(?:[ .-]?\(?\d{1,4}\)?){1,6}"
    # North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567
    r"|\([2-9]\d{2}\) ?\d{3}[ .-]\d{4}"
    r"|[2-9]\d{2}(?P<sep>[ .-])\d{3}(?P=sep)\d{4}"
    # European national: 020 7946 0958, 030 1234567, 06 12 34 56 78
    r"|0[1-9]\d{0,3}(?: \d{2,8}){1,4}"
)


# "version 1.2.3.4", "Version: 1.2.3.4", "version=1.2.3.4", "v 1.2.3.4", "ver. 1.2.3.4" are
# version numbers, not addresses ("v1.2.3.4" is already excluded: a word character before).
_NOT_AFTER_VERSION = (
    r"(?<!(?i:version)\s)(?<!(?i:version):\s)(?<!(?i:version)[:=])"
    r"(?<!\b(?i:v)\s)(?<!\b(?i:ver)\s)(?<!\b(?i:ver)\.\s)"
)

DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        PRIVATE_KEY_RE,
        frozenset(),  # held back by its own rule, see stream_hold_start
        PRIVATE_KEY_BODY_MAX + 2 * PRIVATE_KEY_MARKER_MAX,
        0,
    ),
    Detector(
        "jwt",
        re.compile(
            r"(?<![\w-])eyJ[A-Za-z0-9_-]{2,2000}\.[A-Za-z0-9_-]{2,6000}\.[A-Za-z0-9_-]{0,2000}"
            r"(?![\w-])"
        ),
        ALNUM | _chars("_-."),
        10010,
        1,
        _jwt_ok,
        prefixes=("eyJ",),
    ),
    Detector(
        "aws_secret_access_key",
        re.compile(
            r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key"
            r"|aws secret access key|aws secret key)"
            r"[\"']?[ \t]{0,3}[:=][ \t]{0,3}[\"']?(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        ALNUM | _chars("_ \t:=\"'/+"),
        80,
        2,
        group="value",
    ),
    Detector(
        "aws_access_key_id",
        re.compile(
            r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|APKA|AROA)"
            r"[A-Z0-9]{16}(?![A-Za-z0-9])"
        ),
        _chars("A-Z", "0-9"),
        20,
        3,
    ),
    Detector(
        "openai_api_key",
        re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![\w-])"),
        ALNUM | _chars("_-"),
        265,
        4,
        _openai_ok,
        prefixes=("sk-",),
    ),
    Detector(
        "github_token",
        re.compile(r"(?<!\w)(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})(?!\w)"),
        ALNUM | _chars("_"),
        255,
        5,
        prefixes=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Detector(
        "iban",
        re.compile(
            r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
            r"(?![A-Za-z0-9])"
        ),
        _chars("A-Z", "0-9", " "),
        44,
        6,
        _iban_ok,
        claims_when_invalid=True,
    ),
    Detector(
        "credit_card",
        re.compile(
            r"(?<![\w.+-])(?:\d{4}(?P<sep>[ -]?)\d{4}(?P=sep)\d{4}(?P=sep)\d{4}(?:(?P=sep)\d{3})?"
            r"|\d{4}(?P<asep>[ -]?)\d{6}(?P=asep)\d{5}|\d{13,19})(?![\w]|[.-]\d)"
        ),
        DIGITS | _chars(" -"),
        23,
        7,
        _card_ok,
        claims_when_invalid=True,
    ),
    Detector(
        "us_ssn",
        re.compile(
            r"(?<![\w-])(?!000|666|9\d\d)\d{3}(?P<sep>[- ])(?!00)\d{2}(?P=sep)(?!0000)\d{4}"
            r"(?![\w-])"
        ),
        DIGITS | _chars(" -"),
        11,
        8,
    ),
    Detector(
        "email",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
            r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,6}[A-Za-z]{2,24}"
            r"(?![\w-]|\.[A-Za-z0-9])"
        ),
        ALNUM | _chars("._%+-@"),
        480,
        9,
    ),
    Detector(
        "ipv6",
        re.compile(
            r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
            r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?![\w:]|\.\d)"
        ),
        _chars("0-9", "a-f", "A-F", ":."),
        56,
        10,
        _ipv6_ok,
    ),
    Detector(
        "ipv4",
        re.compile(
            r"(?<![\w.:-])" + _NOT_AFTER_VERSION + r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
            r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w-]|\.\d)"
        ),
        DIGITS | _chars("."),
        15,
        11,
    ),
    Detector(
        "phone",
        re.compile(_NOT_WORD_BEFORE + r"(?:" + _PHONE + r")(?![\w]|[.-]\d)"),
        DIGITS | _chars("+()-. "),
        48,
        12,
        _phone_ok,
    ),
)


def raw_matches(detector: Detector, text: str, pos: int) -> list[re.Match[str]]:
    return list(detector.pattern.finditer(text, pos))


def candidates(
    detectors: tuple[Detector, ...], text: str, pos: int = 0
) -> tuple[list[Candidate], list[tuple[int, int]]]:
    """Valid candidates of every detector from ``pos`` on, plus every raw match span
    (valid or not), which the stream redactor must not cut through."""
    found: list[Candidate] = []
    spans: list[tuple[int, int]] = []
    for detector in detectors:
        for match in detector.pattern.finditer(text, pos):
            spans.append(match.span())
            value = match.group(detector.group)
            valid = bool(value) and detector.validate(value)
            if valid or detector.claims_when_invalid:
                start, end = match.span(detector.group)
                found.append(
                    Candidate(detector.kind if valid else "", start, end, match.start(),
                              match.end(), detector.priority)
                )
    return found, spans


def select(found: list[Candidate]) -> list[Candidate]:
    """Non-overlapping findings, left to right. Where candidates overlap, the stronger
    detector wins (a secret over an email it looks like the start of), then the longer
    match, then the leftmost. Claims take part but are not returned."""
    starts: list[int] = []  # chosen spans, sorted and disjoint
    ends: list[int] = []
    chosen: list[Candidate] = []
    for cand in sorted(found, key=lambda c: (c.priority, c.start - c.end, c.start)):
        i = bisect.bisect_right(starts, cand.start)
        if (i > 0 and ends[i - 1] > cand.start) or (i < len(starts) and starts[i] < cand.end):
            continue
        starts.insert(i, cand.start)
        ends.insert(i, cand.end)
        chosen.append(cand)
    return sorted((c for c in chosen if c.kind), key=lambda c: c.start)


def stream_hold_start(detector: Detector, text: str, base: int) -> int:
    """The earliest index of ``text`` (>= base) from which a match of ``detector`` could
    still grow when more text arrives; ``len(text)`` when none can."""
    if detector.kind == "private_key":
        return _private_key_hold_start(text, base)
    run_start = _charset_run_start(detector, text, base)
    if detector.kind == "email":
        return _email_hold_start(text, run_start)
    if detector.prefixes:
        return _prefix_hold_start(detector.prefixes, text, run_start)
    return run_start


def _charset_run_start(detector: Detector, text: str, base: int) -> int:
    """Start of the trailing run of characters a match can consist of (at most one match
    long): a match still growing at the end of ``text`` lies inside it."""
    limit = max(base, len(text) - detector.max_len + 1)
    return limit + len(text[limit:].rstrip(detector.chars))


def _prefix_hold_start(prefixes: tuple[str, ...], text: str, run_start: int) -> int:
    end = len(text)
    hold = end
    for prefix in prefixes:
        found = text.find(prefix, run_start)
        if found != -1:
            hold = min(hold, found)
        for k in range(1, len(prefix)):  # the prefix cut off by the end of the text
            if end - k >= run_start and text.endswith(prefix[:k]):
                hold = min(hold, end - k)
    return hold


EMAIL_LOCAL_MAX = 64
EMAIL_DOMAIN_MAX = 6 * 64 + 25


def _email_hold_start(text: str, run_start: int) -> int:
    """A growing address has its '@' at most EMAIL_DOMAIN_MAX characters before the end
    and its start at most EMAIL_LOCAL_MAX characters before its '@' (or before the end
    while the '@' has yet to come)."""
    end = len(text)
    at = text.find("@", max(run_start, end - EMAIL_DOMAIN_MAX))
    if at == -1:
        return max(run_start, end - EMAIL_LOCAL_MAX)
    return max(run_start, at - EMAIL_LOCAL_MAX)


def _private_key_hold_start(text: str, base: int) -> int:
    end = len(text)
    for header in PRIVATE_KEY_HEADER_RE.finditer(text, base):
        block = PRIVATE_KEY_RE.match(text, header.start())
        resolved = block is not None and (
            block.group("footer") is not None
            or end - header.end() >= PRIVATE_KEY_BODY_MAX + PRIVATE_KEY_MARKER_MAX
        )
        if not resolved:
            return header.start()
    for i in range(max(base, end - PRIVATE_KEY_MARKER_MAX), end):
        if text[i] != "-":
            continue
        tail = text[i:]
        if "-----BEGIN ".startswith(tail) or PRIVATE_KEY_PARTIAL_RE.match(tail):
            return i
    return end
