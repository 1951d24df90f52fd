"""The one plain-text table every command prints (metrics per fold, emotion scores, confusion)."""

from __future__ import annotations

from typing import Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "", rule: bool = False) -> str:
    """Columns two spaces apart, the first left-aligned and the rest right-aligned (numbers);
    ``rule`` puts a line of dashes under the header."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        indent + "  ".join([row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:]))])
        for row in table
    ]
    if rule:
        lines.insert(1, indent + "  ".join("-" * width for width in widths))
    return "\n".join(lines)
