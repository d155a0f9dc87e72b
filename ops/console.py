"""The one rich console every task prints through (stderr for progress, stdout for results)."""

import json as _json
import sys

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

out = Console()
err = Console(stderr=True)


def json(data: object) -> None:
    """A result for scripts: JSON on stdout, no markup, no wrapping."""
    sys.stdout.write(_json.dumps(data, indent=1, default=str) + "\n")


def step(message: str) -> None:
    err.print(f"[green]✔[/] {message}")


def note(message: str) -> None:
    err.print(f"[dim]  {message}[/]")


def confirm(yes: bool, question: str, word: str, needs: str = "Confirm with --yes") -> None:
    """Go on only with --yes, or when the user types `word` at a terminal; else exit 2, nothing changed."""
    from ops.errors import StackError

    if yes:
        return
    if not sys.stdin.isatty():
        raise StackError(f"{question} {needs}; nothing changed", code=2)
    if err.input(f"{question} Type '{word}' to go on: ").strip() != word:
        raise StackError("not confirmed; nothing changed", code=2)


def fitted_table(title: str, columns: list[tuple[str, bool]], rows: list[list[str]]) -> Table:
    """A table whose key columns (ids, names: (header, True)) are never cut: on a narrow terminal or in
    a pipe (80 columns) the other columns are left out from the right until the table fits, and the
    caption says which (--json has everything)."""
    width = out.width
    widths = [max([len(header), *(len(Text.from_markup(row[i]).plain) for row in rows)]) + 3
              for i, (header, _) in enumerate(columns)]
    keep = [i for i, (_, key) in enumerate(columns) if key]
    used = sum(widths[i] for i in keep) + 1
    for i, (_, key) in enumerate(columns):
        if not key and used + widths[i] <= width:
            keep.append(i)
            used += widths[i]
    keep.sort()
    left_out = [columns[i][0] for i in range(len(columns)) if i not in keep]
    table = Table(*(Column(columns[i][0], no_wrap=columns[i][1], overflow="fold") for i in keep), title=title,
                  title_justify="left",
                  caption=f"(left out for the terminal's width: {', '.join(left_out)}; --json has them)"
                  if left_out else None, caption_justify="left")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    return table
