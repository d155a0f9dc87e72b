"""The one rich console every task prints through (stderr for progress, stdout for results)."""

import json as _json
import sys

from rich.console import Console

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
