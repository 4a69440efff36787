"""``python -m workersim --port 8001 --time-scale 0 --worker-id w1``: serve one simulated worker."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from workersim.run import serve_sim
from workersim.sim_settings import SimConfig


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def parse_args(argv: list[str] | None = None) -> tuple[SimConfig, str, int]:
    parser = argparse.ArgumentParser(prog="python -m workersim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    defaults = SimConfig()
    converters: dict[type, Callable[[str], Any]] = {bool: _parse_bool, int: int, float: float, str: str}
    for field in dataclasses.fields(SimConfig):
        default = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            dest=field.name,
            type=converters[type(default)],
            default=default,
            help=f"(default: {default})",
        )
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    return SimConfig(**args), host, port


def main(argv: list[str] | None = None) -> None:
    config, host, port = parse_args(argv)
    serve_sim(config, host, port)


if __name__ == "__main__":
    main()
