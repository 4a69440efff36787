"""The ``gateway`` command's tree of verbs (``gateway.cli.app``): ``serve_cmd`` (serve, sim, db), ``keys_cmd``,
``plans_cmd`` (plans, orgs), ``workers_cmd``, ``billing_cmd`` and ``demo_cmd`` hold them."""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from gateway.cli import serve_cmd
from gateway.cli.billing_cmd import billing_app
from gateway.cli.demo_cmd import demo
from gateway.cli.keys_cmd import keys_app
from gateway.cli.plain_help import plain_help
from gateway.cli.plans_cmd import orgs_app, plans_app
from gateway.cli.workers_cmd import workers_app

app = typer.Typer(help="LLM API gateway", no_args_is_help=True, add_completion=False)


def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("llm-gateway")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"llm-gateway {version}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """LLM API gateway: OpenAI-compatible endpoints in front of vLLM / SGLang workers."""
    if ctx.invoked_subcommand != "serve":
        gc.enable()  # off while the command started (gateway.cli.main); the server turns it on once started


serve_cmd.register(app)
app.add_typer(keys_app, name="keys")
app.add_typer(plans_app, name="plans")
app.add_typer(orgs_app, name="orgs")
app.add_typer(workers_app, name="workers")
app.add_typer(billing_app, name="billing")
app.command()(demo)


def run() -> None:
    plain_help(app)()
