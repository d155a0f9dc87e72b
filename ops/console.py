"""The one rich console every task prints through (stderr for progress, stdout for results)."""

from rich.console import Console

out = Console()
err = Console(stderr=True)


def step(message: str) -> None:
    err.print(f"[green]✔[/] {message}")


def note(message: str) -> None:
    err.print(f"[dim]  {message}[/]")
