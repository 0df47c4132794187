"""Text measured as a screen shows it: a Chinese character takes two columns, a Latin one."""

from __future__ import annotations

import unicodedata


def width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def wrap(text: str, columns: int, lines: int) -> list[str]:
    """At most `lines` lines of at most `columns` columns; what does not fit ends in an ellipsis."""
    out, line = [], ""
    for ch in " ".join(text.split()):
        if width(line + ch) > columns:
            out.append(line)
            line = ch.lstrip()
            if len(out) == lines:
                break
        else:
            line += ch
    else:
        if line:
            out.append(line)
        return out
    last = out[-1]
    while last and width(last + "…") > columns:
        last = last[:-1]
    out[-1] = last + "…"
    return out
