"""Configuration options (`verdi config`), validated before anything is written."""

from __future__ import annotations

from ops import console, daemon, profiles
from ops.compose import Stack, json_result
from ops.errors import StackError
from ops.inputs import InputError
from ops.runner import SCRIPTS, run_script


def verdi_config(stack: Stack, *args: str, profile: str = "") -> int:
    """`verdi [-p P] config ARGS` in the aiida service; output passes through; returns its exit code."""
    selector = ["-p", profile] if profile else []
    return stack.exec_aiida(["verdi", *selector, "config", *args]).returncode


def check(stack: Stack, option: str, value: str | None = None) -> dict:
    """AiiDA's verdict on an option (and value): unknown options and bad values raise StackError."""
    args = [option] if value is None else [option, value]
    code, out = run_script(stack, SCRIPTS / "check_option.py", args, capture=True)
    verdict = json_result(code, out, f"validating {option} in the aiida service")
    if not verdict["ok"]:
        raise InputError(f"--{verdict['field']}", verdict["error"])
    return verdict


def set_option(stack: Stack, option: str, value: str, is_global: bool, profile: str, restart: bool) -> None:
    verdict = check(stack, option, value)
    if verdict["global_only"] and not is_global:
        raise InputError("--option", f"{option} can only be set globally: add --global")
    if verdi_config(stack, "set", option, value, *(["--global"] if is_global else []), profile=profile):
        raise StackError(f"verdi config set {option} failed")
    _after_change(stack, option, verdict, restart, is_global, profile)


def unset_option(stack: Stack, option: str, is_global: bool, profile: str, restart: bool) -> None:
    verdict = check(stack, option)
    if verdi_config(stack, "unset", option, *(["--global"] if is_global else []), profile=profile):
        raise StackError(f"verdi config unset {option} failed")
    _after_change(stack, option, verdict, restart, is_global, profile)


def _after_change(stack: Stack, option: str, verdict: dict, restart: bool, is_global: bool, profile: str) -> None:
    if not verdict["requires_daemon_restart"]:
        return
    affected = profiles.names(stack)["profiles"] if is_global else [profile or profiles.names(stack)["default"]]
    if restart:
        for name in affected:
            daemon.restart(stack, name)
    else:
        console.err.print(f"[yellow]{option} affects the daemon[/]: it takes effect after "
                          + " and ".join(f"`./stack daemon.restart --profile {name}`" for name in affected)
                          + " (or pass --restart)")
