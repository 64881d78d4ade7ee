"""The fenced blocks of a Markdown file, with the section each sits in and what it needs.

A block is marked as needing something by an HTML comment on the line before its fence:

    <!-- needs: docker -->
    ```bash
    docker compose up -d
    ```

Several needs are separated by commas (``<!-- needs: OPENAI_API_KEY, minutes -->``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = "```"
NEEDS_COMMENT = re.compile(r"<!--\s*needs:\s*(?P<needs>[^>]*?)\s*-->")
EXPECTED_OUTPUT_COMMENT = re.compile(r"#\s*(?P<expected>[^#]+?)\s*$")


@dataclass(frozen=True)
class FencedBlock:
    language: str
    text: str
    line: int                   # 1-based line of the opening fence
    name: str                   # section slug and language, unique in the file
    needs: tuple[str, ...] = ()

    def expected_outputs(self) -> list[str]:
        """The ``# ...`` comments on ``print(...)`` lines: what the snippet prints there."""
        found = []
        for line in self.text.splitlines():
            match = EXPECTED_OUTPUT_COMMENT.search(line)
            if match and "print(" in line:
                found.append(match.group("expected"))
        return found


def slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


def parse_needs(line: str) -> tuple[str, ...]:
    match = NEEDS_COMMENT.fullmatch(line.strip())
    if not match:
        return ()
    return tuple(need.strip() for need in match.group("needs").split(",") if need.strip())


def _unique_name(section: str, language: str, taken: set[str]) -> str:
    base = f"{section}-{language}" if section else language
    name, count = base, 1
    while name in taken:
        count += 1
        name = f"{base}-{count}"
    taken.add(name)
    return name


def fenced_blocks(path: Path) -> list[FencedBlock]:
    """Every fenced block in ``path``, in order."""
    lines = path.read_text().splitlines()
    blocks: list[FencedBlock] = []
    taken: set[str] = set()
    section, index = "", 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = slug(line.lstrip("#"))
        elif line.startswith(FENCE):
            end = lines.index(FENCE, index + 1)
            language = line[len(FENCE):].strip()
            previous = lines[index - 1] if index else ""
            blocks.append(FencedBlock(
                language=language, text="\n".join(lines[index + 1:end]) + "\n",
                line=index + 1, name=_unique_name(section, language, taken),
                needs=parse_needs(previous)))
            index = end
        index += 1
    return blocks


def console_commands(text: str) -> tuple[str, list[str]]:
    """A ``console`` block as a script (its ``$ `` lines, with their ``\\`` continuations)
    and the output lines it shows."""
    commands: list[str] = []
    output: list[str] = []
    continuing = False
    for line in text.splitlines():
        if continuing or line.startswith("$ "):
            commands.append(line if continuing else line[2:])
            continuing = line.endswith("\\")
        elif line.strip():
            output.append(line.strip())
    return "\n".join(commands) + "\n", output
