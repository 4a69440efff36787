"""The ``gateway`` command: thin verbs over the same services the HTTP API uses.

``verbs`` holds the command tree (``gateway.cli.app``, imported on first use); ``serve_cmd`` (serve, sim, db),
``keys_cmd``, ``plans_cmd`` (plans, orgs), ``workers_cmd``, ``billing_cmd`` and ``demo_cmd`` hold the verbs;
``context`` builds the services they share."""

from __future__ import annotations

import gc
from typing import Any


def main() -> None:
    """The ``gateway`` command. The cyclic garbage collector is off while it starts: start-up builds some
    200k objects that live as long as the process (modules, classes, the runtime) and frees few, and the
    collector's passes over them were about 10% of a server's cold start. The verb turns it back on before
    it runs, the server once it has started (after the lifespan froze what start-up built)."""
    gc.disable()
    from gateway.cli.verbs import run

    run()


def __getattr__(name: str) -> Any:
    if name == "app":  # the typer app, for tests and embedding: its imports are the whole gateway's
        from gateway.cli.verbs import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "main"]
