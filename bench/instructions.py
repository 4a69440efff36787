"""Instructions per request of the gateway, counted by callgrind: a figure the machine's other load
does not move (two runs of the same tree agree within 0.5%), for changes too small to see in req/s.

    python -m bench.instructions [--requests 1000] [--size 1] [--stream] [--env NAME=VALUE ...]
                                 [--compare NAME=VALUE,NAME=VALUE ...]

The gateway of ``bench.compare`` (every stage on: a plan's limits, a budget, prefix routing on a
private Redis, metering to the stream) runs under ``valgrind --tool=callgrind`` in front of the instant
upstream; after a warm-up the counters are zeroed, the gateway idles 10 s (its background work per
second), then answers ``--requests`` requests from 8 keep-alive connections, and the counters are
read. Printed: background instructions per second, and instructions per request with the background
of the request window taken out. Each ``--compare`` adds a run with those settings on top of
``--env``, printed beside the first. Needs valgrind (Debian's package). Kernel time (system calls)
is not counted: callgrind sees user space only.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

from bench.common import ROOT, free_port, pinned
from bench.compare import Gateway, bodies, start_redis, start_upstream

_CONNECTIONS = 8


def _send(port: int, key: str, body_list: list[bytes], count: int) -> None:
    def one_connection(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for i in range(n):
            conn.request("POST", "/v1/chat/completions", body=body_list[i % len(body_list)],
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"the gateway answered {resp.status}")
        conn.close()

    threads = [threading.Thread(target=one_connection, args=(count // _CONNECTIONS,)) for _ in range(_CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _total(out: str) -> int:
    """The instruction count of callgrind's newest dump."""
    newest = max(glob.glob(f"{out}/cg.*"), key=os.path.getmtime)
    with open(newest) as f:
        found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    if found is None:
        raise RuntimeError(f"no totals in {newest}")
    return int(found.group(1))


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def measure(env: dict[str, str], requests: int, size_kb: int, stream: bool) -> tuple[float, float]:
    """(background instructions per second, instructions per request) of one gateway."""
    redis, redis_url, _ = start_redis("1")
    upstream, upstream_url = start_upstream("1")
    gw = Gateway(redis_url)
    gw.env.update(env)
    out = tempfile.mkdtemp(prefix="bench-instructions-")
    try:
        gw.prepare("1")
        port = free_port()
        gw.url = f"http://127.0.0.1:{port}"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", sys.executable, "-m",
               "gateway.cli", "serve"]
        gw.popen = subprocess.Popen(pinned(cmd, "0"), cwd=ROOT, stdout=gw.log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **gw.env, "GATEWAY_WORKERS": upstream_url,
                                         "GATEWAY_PORT": str(port)})
        gw._wait_first_200(time.perf_counter(), timeout=600)
        for _ in range(20):  # the admin app is built on a thread once serving starts: slow under valgrind
            try:
                gw._set_budget()
                break
            except OSError:
                time.sleep(3)
        assert gw.key is not None
        body_list = bodies(size_kb * 1024, stream)
        _send(port, gw.key, body_list, 200)
        _control("-z", gw.popen.pid)
        t0 = time.monotonic()
        time.sleep(10)
        _control("-d", gw.popen.pid)
        background = _total(out) / (time.monotonic() - t0)
        _control("-z", gw.popen.pid)
        t0 = time.monotonic()
        _send(port, gw.key, body_list, requests)
        window = time.monotonic() - t0
        _control("-d", gw.popen.pid)
        return background, (_total(out) - background * window) / requests
    finally:
        gw.stop()
        upstream.terminate()
        redis.terminate()


def _settings(text: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in text.split(",") if kv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--size", type=int, default=1, help="chat body size in KB")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=VALUE,...")
    args = ap.parse_args()
    base = _settings(",".join(args.env))
    runs = [("as configured", base)] + [(c, {**base, **_settings(c)}) for c in args.compare]
    first = None
    for label, env in runs:
        background, per_request = measure(env, args.requests, args.size, args.stream)
        first = first or per_request
        print(f"{label:<40} {args.size} KB {'stream' if args.stream else 'json'}: "
              f"{per_request / 1e3:8.0f} K instructions/request ({per_request / first:.3f} of the first), "
              f"background {background / 1e6:.1f} M/s", flush=True)


if __name__ == "__main__":
    main()
