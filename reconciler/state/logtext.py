"""How every state backend stores a run's log lines and cuts a log to a tail: one text form, so
a log reads the same whichever store holds it."""

from __future__ import annotations

from datetime import UTC, datetime

from reconciler.state.runs import LogTail

# A newline inside a log line is stored escaped, so one line is always one line of output.
_NEWLINE, _ESCAPED_NEWLINE = "\n", "\\n"


def log_line(at: datetime, line: str) -> str:
    """A stored log line: its UTC time to the second, then the line."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"history needs timezone-aware datetimes, got naive {at!r}")
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}Z {line.replace(_NEWLINE, _ESCAPED_NEWLINE)}"


def bounded(lines: list[str], skipped: int, tail: LogTail) -> str:
    """`lines` as output, cut from the front to `tail`, saying how many lines it left out."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-tail.lines :] if tail.lines else []):
        if size + len(line) + 1 > tail.chars:
            if not kept:  # one huge line: its end is what matters
                kept.append(line[len(line) - tail.chars + 1 :])
            break
        kept.append(line)
        size += len(line) + 1
    skipped += len(lines) - len(kept)
    note = [f"[{skipped:,} earlier lines not shown]"] if skipped else []
    return "".join(f"{line}\n" for line in note + kept[::-1])
