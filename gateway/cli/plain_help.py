"""Help that names an option's value (``--org NAME``) instead of Typer's type tags (``<str>``, ``<bool>``),
shows flags bare and arguments by name alone: applied once to the whole command tree before it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption


def _no_type(ctx: object) -> None:
    return None


def plain_help(app: typer.Typer) -> Callable[..., Any]:
    """The click command of ``app`` with a metavar on every parameter that has none: empty for flags (the
    help option included), the parameter's name in capitals for values."""
    root = typer.main.get_command(app)
    pending = [root]
    while pending:
        command = pending.pop()
        if isinstance(command, TyperGroup):
            pending.extend(command.commands.values())
        help_option = command.get_help_option(typer.Context(command))
        for param in [*command.params, *([help_option] if help_option is not None else [])]:
            if param.metavar is not None:
                continue
            if isinstance(param, TyperOption) and (param.is_flag or param.count):
                param.metavar = ""
            elif isinstance(param, TyperOption | TyperArgument):
                param.metavar = (param.name or "value").upper()
        for param in command.params:
            if isinstance(param, TyperArgument):  # its name is the metavar already: no type column beside it
                param.display_type_rich = _no_type  # type: ignore[method-assign]
    return root
