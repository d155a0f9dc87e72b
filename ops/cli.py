"""The command line: invoke's Program and Task with declared option types, exit codes and completion.

- `stack_task(options={...})` declares every option's type (ops/inputs.py); a task with an
  undeclared option does not load. Values are checked while the command line is parsed, names
  and ids that must exist once the stack answers, and conflicting options before the body runs.
- Bad input exits 2 (invoke's own parse errors too, which it would exit 1 with, or a traceback).
- Completion: invoke's (`--complete`), plus option values the stack cached (profiles, backup ids).
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

from invoke import Collection, Exit, Program, Task, task
from invoke.completion.complete import complete
from invoke.parser import Argument, ParseError

from ops.errors import StackError
from ops.inputs import Input, InputError, Lookup

COMPLETION_SCRIPTS = Path(__file__).parent / "completion"


def lazy(*names: str) -> list[ModuleType]:
    """Modules that load on first use: a command refused while parsing, `--help` or a tab press
    never pays for the docker SDK, pydantic and rich (half of ./stack's start-up)."""
    modules = []
    for name in names:
        if name not in sys.modules:
            spec = importlib.util.find_spec(name)
            spec.loader = importlib.util.LazyLoader(spec.loader)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        modules.append(sys.modules[name])
    return modules


(console,) = lazy("ops.console")


def dashed(param: str) -> str:
    """A parameter's option name as invoke spells it (`all_` → `all`, `skip_db` → `skip-db`)."""
    return param.strip("_").replace("_", "-")


def flag_of(param: str) -> str:
    """The option as typed: --skip-db, or -k for one letter."""
    name = dashed(param)
    return f"-{name}" if len(name) == 1 else f"--{name}"


class TypedArgument(Argument):
    """An invoke Argument whose value goes through its declared Input as it is parsed."""

    def __init__(self, declared: Input, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.declared = declared

    def set_value(self, value: Any, cast: bool = True) -> None:
        flag = flag_of(self.name)
        self.raw_value = value
        try:
            self._value = self.declared.parse(flag, value) if cast else value
        except InputError as exc:
            raise ParseError(str(exc)) from None


class StackTask(Task):
    """A task whose options are all declared; StackError → its message and exit code."""

    def __init__(self, body: Callable, options: dict[str, Input] | None = None,
                 conflicts: Iterable[tuple[str, str]] = (), alone: Iterable[str] = (), **kwargs: Any) -> None:
        self.options = dict(options or {})
        self.conflicts = tuple(conflicts)
        self.alone = tuple(alone)
        params = [p for p in list(inspect.signature(body).parameters)[1:]]
        undeclared = sorted(set(params) - set(self.options))
        unknown = sorted(set(self.options) - set(params))
        if undeclared or unknown:
            raise TypeError(f"task {body.__name__}: options without a declared type {undeclared}, "
                            f"declared but not options {unknown}")
        help_texts = {dashed(p): opt.help for p, opt in self.options.items() if opt.help}
        super().__init__(body, help={**help_texts, **kwargs.pop("help", {})}, **kwargs)

    def arg_opts(self, name: str, default: Any, taken_names: set[str]) -> dict[str, Any]:
        opts = super().arg_opts(name, default, taken_names)
        opts["kind"] = self.options[name].kind  # declared, never inferred from the default
        return opts

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        typed = []
        for arg in super().get_arguments(ignore_unknown_help):  # invoke pops help texts: the second call has none
            param = arg.attr_name or arg.name
            typed.append(TypedArgument(self.options[param], names=arg.names, kind=arg.kind, default=arg.default,
                                       help=self.options[param].help or arg.help, positional=arg.positional,
                                       optional=arg.optional, incrementable=arg.incrementable, attr_name=arg.attr_name))
        return typed

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self.check(kwargs)
            return super().__call__(*args, **kwargs)
        except StackError as exc:
            from rich.markup import escape

            # plain text: "[user@]host" or "[::1]:22" in a message is not rich markup
            console.err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise Exit(code=exc.code) from None

    def check(self, values: dict[str, Any]) -> None:
        """Conflicts, then what needs the stack (existence), before the task's body runs."""
        defaults = {name: p.default for name, p in inspect.signature(self.body).parameters.items()}
        given = {name for name, value in values.items() if value != defaults.get(name)}
        for first, second in self.conflicts:
            if first in given and second in given:
                raise InputError(flag_of(second), f"cannot be combined with {flag_of(first)}; give one of them")
        for flag in self.alone:  # a mode of its own: the other options (and their defaults) do not apply
            if flag in given:
                others = sorted(given - {flag})
                if others:
                    raise InputError(flag_of(others[0]), f"cannot be combined with {flag_of(flag)}, which takes no "
                                                         "other option")
                return
        needs_stack = [name for name in self.options if type(self.options[name]).resolve is not Input.resolve]
        if not needs_stack:
            return
        from ops import settings
        from ops.compose import Stack

        lookup = Lookup(Stack(settings.load()))
        for name in needs_stack:
            if values.get(name) is not None:
                self.options[name].resolve(flag_of(name), values[name], lookup, values)


def stack_task(*, options: dict[str, Input] | None = None, conflicts: Iterable[tuple[str, str]] = (),
               alone: Iterable[str] = (), **kwargs: Any) -> Callable[[Callable], StackTask]:
    """@task with declared option types (`options`, keyed by parameter), conflicting pairs, and flags that
    take no other option (`alone`: given, nothing else is checked against the stack)."""
    return functools.partial(task, klass=StackTask, options=options or {}, conflicts=conflicts, alone=alone,
                             **kwargs)


class StackProgram(Program):
    """invoke's Program with exit 2 for bad input, and the stack's completion."""

    def parse_core(self, argv: list[str] | None) -> None:
        tokens = list(argv if argv is not None else sys.argv)
        shell = _completion_script_request(tokens[1:])
        if shell is not None:
            script = COMPLETION_SCRIPTS / f"stack.{shell}"
            if not script.is_file():
                raise Exit(f"error: no completion script for {shell!r} (bash, zsh)", code=2)
            print(script.read_text(), end="")
            raise Exit
        try:
            super().parse_core(argv)
        except ParseError as exc:
            raise Exit(f"error: {exc}", code=2) from None

    def parse_tasks(self) -> None:
        asked = _help_request(self.core.unparsed, self.collection)
        if asked is not None:  # before invoke reads `--help` as the value of a task's positional argument
            self.parser = self._make_parser()
            self.print_task_help(asked)
            raise Exit
        problem = _misused_options(self.core.unparsed, self.collection)
        if problem:
            raise Exit(f"error: {problem}; nothing changed", code=2)
        try:
            super().parse_tasks()
        except ParseError as exc:
            message = str(exc) if str(exc).endswith("nothing changed") else f"{exc}; nothing changed"
            raise Exit(f"error: {message}", code=2) from None

    def parse_cleanup(self) -> None:
        if self.args.complete.value:
            try:
                words = shlex.split(self.core.remainder)[1:]  # the first word: the program as typed
            except ValueError:
                words = []
            values = _value_completions(words, self.collection)
            if values is not None:
                print("\n".join(values))
                raise Exit
            # invoke strips the program only when typed as one of binary_names (not ./stack)
            self.core.remainder = shlex.join(["stack", *words])
            complete(names=self.binary_names, core=self.core, initial_context=self.initial_context,
                     collection=self.collection, parser=self._make_parser())
        super().parse_cleanup()


def _completion_script_request(tokens: list[str]) -> str | None:
    for i, token in enumerate(tokens):
        if token == "--print-completion-script":
            return tokens[i + 1] if i + 1 < len(tokens) else ""
        if token.startswith("--print-completion-script="):
            return token.partition("=")[2]
    return None


def _task_at(token: str, collection: Collection) -> Task | None:
    try:
        return collection[token]
    except (KeyError, ValueError):
        return None


def _help_request(tokens: list[str], collection: Collection) -> str | None:
    """The task of `./stack TASK [...] --help` (or -h), as typed."""
    current = None
    for token in tokens:
        if token == "--":
            break
        if token in ("--help", "-h") and current is not None:
            return current
        if not token.startswith("-") and _task_at(token, collection) is not None:
            current = token
    return None


def _misused_options(tokens: list[str], collection: Collection) -> str | None:
    """What invoke would misread: `--follow=yes` (it reads `yes` as a task: "No idea what 'yes' is!")
    and an option given twice (invoke keeps the first and reads the second value as a task)."""
    current, seen, names = None, set(), {}
    for token in tokens:
        if token == "--":
            break
        if not token.startswith("-"):
            task = _task_at(token, collection)
            if isinstance(task, StackTask):
                current, seen = task, set()
                names = {name: arg for arg in task.get_arguments() for name in arg.names}
            continue
        if current is None:
            continue
        name, has_value, value = token.lstrip("-").partition("=")
        arg = names.get(name)
        if arg is None:
            continue
        flag = flag_of(arg.attr_name or arg.name)
        if has_value and arg.kind is bool:
            return f"{flag}: is a switch and takes no value (got {value!r})"
        if arg.name in seen:
            return f"{flag}: given twice; give it once"
        seen.add(arg.name)
    return None


def _value_completions(words: list[str], collection: Collection) -> list[str] | None:
    """Cached profile names / backup ids where a value is being typed; None: leave it to invoke."""
    current = None
    for word in words:
        current = _task_at(word, collection) or current
    if not isinstance(current, StackTask) or not words:
        return None
    last, before = words[-1], (words[-2] if len(words) > 1 else "")
    wanted = None
    for param, declared in current.options.items():
        if declared.completes and (last == flag_of(param) or (before == flag_of(param) and not last.startswith("-"))):
            wanted = declared.completes
    first = current.options[current.positional[0]] if current.positional else None
    if wanted is None and first is not None and first.completes and current in (
            _task_at(last, collection), _task_at(before, collection) if not last.startswith("-") else None):
        wanted = first.completes
    if wanted is None:
        return None
    from ops import completion_cache

    return completion_cache.read(wanted)


def main() -> None:
    """./stack's entry (through ops/__main__.py)."""
    import tasks

    try:
        StackProgram(namespace=tasks.ns, name="aiida-stack", binary="./stack",
                     binary_names=["stack", "invoke", "inv"], version="0.1.0").run()
    except BrokenPipeError:  # `./stack ... | head`: the reader has gone; stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
