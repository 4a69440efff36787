"""``python -m providerfake --port 8090 [--shape xai|openai]``: one fake hosted provider until interrupted."""

from __future__ import annotations

import argparse

import uvicorn

from providerfake.provider_app import ProviderFake


def main() -> None:
    parser = argparse.ArgumentParser(prog="providerfake")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--shape", choices=("openai", "xai"), default="xai")
    args = parser.parse_args()
    uvicorn.run(ProviderFake(shape=args.shape), host=args.host, port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
