"""This gateway side by side with LiteLLM's proxy and vllm-router, in front of the same instant upstream.

    python -m bench.compare [--quick] [--seconds 6] [--connections 32] [--sizes 1,32,128]
                            [--targets direct,gateway,litellm,vllm-router] [--modes json,stream,stream-new]

One run measures every target on the same machine, interleaved (for each body size and mode, every
target in turn, so the machine's other load hits all alike): each server alone on
``--server-cpu`` (taskset), the instant upstream (``bench/instant_upstream.py``), a private
redis-server, the gateway's ledger writer and the load generator (wrk, 1 thread, ``--connections``
keep-alive connections) on ``--load-cpu``. Bodies are 1 KB chat requests and the turns of a growing
agent conversation of about 32 KB and 128 KB (``bench/agent_bodies.py``); modes are non-streaming,
streaming, and streaming with a new connection per request (``Connection: close``).

Per target it prints requests/s and p50/p99 per size and mode, the server's CPU per request (user +
system of its process tree, from /proc), its RSS after the load, its cold start (spawn to the first 200
of a chat request; the gateway's bytecode compiled first, as an install has it) and the latency it adds
at one connection over the upstream directly (p50/p99, non-streaming). Then one table of ratios: the
gateway's requests/s over each peer's.

The gateway runs with every stage on: an API key (auth), a plan whose limits never bind (every kind,
organisation and key), a monthly budget, prefix-aware routing on Redis, metering to the Redis usage
stream (the ledger writer in its own process, ``GATEWAY_LEDGER_WRITERS=0``), the request log on.

The peers are installed into their own virtualenvs, never into the project's (``--peers-dir``, by
default ``~/.cache/gateway-bench``): ``pip install 'litellm[proxy]'`` in ``litellm/`` and ``pip install
vllm-router`` in ``vllm-router/``; ``--install-peers`` creates them. A target whose environment is
missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.agent_bodies import MODEL, bodies
from bench.common import ROOT, compile_bytecode, free_port, make_key, pinned, temp_env

PEERS_DIR = Path(os.environ.get("GATEWAY_BENCH_PEERS", Path.home() / ".cache" / "gateway-bench"))
MODES = {"json": (False, False), "stream": (True, False), "stream-new": (True, True)}
GENEROUS = ["--rpm", "1000000000", "--tpm", "1000000000000", "--tpd", "1000000000000", "--concurrency", "100000",
            "--key-rpm", "500000000", "--key-tpm", "500000000000", "--key-concurrency", "50000"]

_WRK_SCRIPT = """
local files = {files}
local close = {close}
local reqs = {{}}
local n = 0
init = function(args)
  local headers = {{["Content-Type"] = "application/json"}}
  {auth}
  if close then headers["Connection"] = "close" end
  for i, name in ipairs(files) do
    local f = io.open(name, "rb"); local body = f:read("*a"); f:close()
    reqs[i] = wrk.format("POST", "{path}", headers, body)
  end
end
request = function()
  n = n % #reqs + 1
  return reqs[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Figures:
    loads: dict[tuple[int, str], Load] = field(default_factory=dict)
    cpu_us: dict[tuple[int, str], float] = field(default_factory=dict)
    cold_start_s: float = float("nan")
    cold_start_cpu_s: float = float("nan")  # the server's own CPU time until that first 200
    rss_mib: float = float("nan")
    idle: dict[int, Load] = field(default_factory=dict)  # 1 connection, non-streaming, per size
    note: str = ""


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return pids


def tree_cpu_s(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def tree_rss_mib(pid: int) -> float:
    total = 0
    for p in tree_pids(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


class Wrk:
    def __init__(self, cpu: str, workdir: Path) -> None:
        self.cpu = cpu
        self.workdir = workdir
        self._files: dict[tuple[int, bool], list[str]] = {}

    def body_files(self, size_kb: int, stream: bool) -> list[str]:
        key = (size_kb, stream)
        if key not in self._files:
            names = []
            for i, body in enumerate(bodies(size_kb * 1024, stream)):
                path = self.workdir / f"body-{size_kb}-{int(stream)}-{i}.json"
                path.write_bytes(body)
                names.append(str(path))
            self._files[key] = names
        return self._files[key]

    def run(self, url: str, path: str, key: str | None, size_kb: int, mode: str, seconds: float,
            connections: int) -> Load:
        stream, close = MODES[mode]
        files = self.body_files(size_kb, stream)
        script = self.workdir / "load.lua"
        auth = f'headers["Authorization"] = "Bearer {key}"' if key else ""
        script.write_text(_WRK_SCRIPT.format(files="{" + ", ".join(json.dumps(f) for f in files) + "}",
                                             close="true" if close else "false", auth=auth, path=path))
        cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                      "-s", str(script), url], self.cpu)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError("wrk gave no result: " + out[-500:])
        n, duration_us, p50, p99, *errs = (int(x) for x in line.split()[1:])
        if n == 0:  # nothing completed within the run (a server slower than the run is long)
            return Load(0.0, float("nan"), float("nan"), 0, sum(errs))
        return Load(n / (duration_us / 1e6), p50 / 1000, p99 / 1000, n, sum(errs))


# --- the processes ---------------------------------------------------------------------------------
class Server:
    name = ""

    def __init__(self) -> None:
        self.popen: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.key: str | None = None
        self.cold_cpu = float("nan")  # the server's CPU seconds from spawn to its first 200
        self.log = tempfile.NamedTemporaryFile(prefix=f"compare-{self.name}-", suffix=".log",  # noqa: SIM115
                                               delete=False)  # kept open for the server's life

    def available(self) -> str:
        """Empty when it can run, else why not."""
        return ""

    def spawn(self, cpu: str, upstream: str) -> float:
        """Start the server; returns seconds from spawn to the first 200 of a chat request."""
        raise NotImplementedError

    def _wait_first_200(self, t0: float, timeout: float = 300.0) -> float:
        body = json.dumps({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        while time.perf_counter() - t0 < timeout:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log.name}")
            try:
                req = urllib.request.Request(self.url + "/v1/chat/completions", data=body, headers=headers)
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        elapsed = time.perf_counter() - t0
                        self.cold_cpu = tree_cpu_s(self.popen.pid) if self.popen is not None else float("nan")
                        return elapsed
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.005)
        raise RuntimeError(f"{self.name} gave no 200 within {timeout:.0f} s: see {self.log.name}")

    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self) -> None:
        if self.popen is None:
            return
        for p in reversed(tree_pids(self.popen.pid)[1:]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self.popen = None


class Direct(Server):
    name = "direct"

    def spawn(self, cpu: str, upstream: str) -> float:
        self.url = upstream
        return float("nan")

    def pid(self) -> int:
        return -1

    def stop(self) -> None:
        pass


class Gateway(Server):
    name = "gateway"

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self.env = temp_env(redis_url, "", private_redis=True)  # a private Redis (start_redis): gone at exit
        self.env.update({"GATEWAY_LEDGER_WRITERS": "0", "GATEWAY_ADMIN_KEY": "bench-admin-" + os.urandom(4).hex(),
                         "GATEWAY_REQUEST_LOG": "true", "GATEWAY_ROUTING_POLICY": "prefix_aware"})
        self.writer: subprocess.Popen[bytes] | None = None
        self.org_id = ""

    def _cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env={**os.environ, **self.env},
                             check=True, capture_output=True, text=True)
        return out.stdout

    def prepare(self, load_cpu: str) -> None:
        self.key = make_key(self.env)
        self._cli("plans", "create", "bench-generous", *GENEROUS)
        self._cli("orgs", "set-plan", "bench", "bench-generous")
        self.org_id = next(line.split("\t")[0] for line in self._cli("orgs", "list").splitlines()
                           if line.split("\t")[1:2] == ["bench"])
        self.writer = subprocess.Popen(pinned([sys.executable, "-m", "gateway.cli", "billing", "writer"], load_cpu),
                                       cwd=ROOT, env={**os.environ, **self.env}, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)

    def spawn(self, cpu: str, upstream: str) -> float:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, **self.env, "GATEWAY_WORKERS": upstream, "GATEWAY_PORT": str(port)}
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(pinned([sys.executable, "-m", "gateway.cli", "serve"], cpu), cwd=ROOT, env=env,
                                      stdout=self.log, stderr=subprocess.STDOUT)
        cold = self._wait_first_200(t0)
        self._set_budget()
        return cold

    def _set_budget(self) -> None:
        req = urllib.request.Request(self.url + f"/admin/orgs/{self.org_id}/budget", method="PUT",
                                     data=json.dumps({"monthly_limit_usd": "1000000.00"}).encode(),
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.env['GATEWAY_ADMIN_KEY']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.status
        time.sleep(3.5)  # the key cache re-reads the principal (with its budget) within GATEWAY_KEY_CACHE_TTL_S

    def stop(self) -> None:
        super().stop()
        if self.writer is not None:
            self.writer.terminate()
            self.writer.wait(10)
            self.writer = None


class LiteLLM(Server):
    name = "litellm"

    def __init__(self) -> None:
        super().__init__()
        self.key = "sk-bench-" + os.urandom(8).hex()  # its proxy refuses to start without a master key

    def available(self) -> str:
        return "" if (PEERS_DIR / "litellm/bin/litellm").exists() else f"no {PEERS_DIR}/litellm (--install-peers)"

    def spawn(self, cpu: str, upstream: str) -> float:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = Path(self.log.name).with_suffix(".yaml")
        config.write_text(json.dumps({
            "model_list": [{"model_name": MODEL, "litellm_params": {
                "model": f"openai/{MODEL}", "api_base": upstream + "/v1", "api_key": "bench"}}],
            "litellm_settings": {"telemetry": False},
            "general_settings": {"master_key": self.key}}))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "DISABLE_SCHEMA_UPDATE":
               "true"}
        env.pop("DATABASE_URL", None)
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(pinned([str(PEERS_DIR / "litellm/bin/litellm"), "--config", str(config),
                                              "--port", str(port), "--num_workers", "1"], cpu),
                                      env=env, stdout=self.log, stderr=subprocess.STDOUT)
        return self._wait_first_200(t0)


class VllmRouter(Server):
    name = "vllm-router"

    def available(self) -> str:
        return "" if (PEERS_DIR / "vllm-router/bin/vllm-router").exists() else \
            f"no {PEERS_DIR}/vllm-router (--install-peers)"

    def spawn(self, cpu: str, upstream: str) -> float:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        t0 = time.perf_counter()
        self.popen = subprocess.Popen(pinned([str(PEERS_DIR / "vllm-router/bin/vllm-router"), "--worker-urls",
                                              upstream, "--policy", "cache_aware", "--host", "127.0.0.1",
                                              "--port", str(port)], cpu),
                                      stdout=self.log, stderr=subprocess.STDOUT)
        return self._wait_first_200(t0)


def start_redis(cpu: str) -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit("redis-server is needed (a private one runs for the benchmark)")
    port = free_port()
    data = tempfile.mkdtemp(prefix="compare-redis-")
    popen = subprocess.Popen(pinned([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                     "--appendonly", "no", "--dir", data], cpu),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        ping = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if ping.stdout.strip() == "PONG":
            break
        time.sleep(0.02)
    return popen, f"redis://127.0.0.1:{port}/0", data


def start_upstream(cpu: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    popen = subprocess.Popen(pinned([sys.executable, "-m", "bench.instant_upstream", "--port", str(port)], cpu),
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1500):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return popen, url
        except OSError:
            time.sleep(0.02)
    raise SystemExit("the instant upstream did not start")


def install_peers() -> None:
    for name, spec in (("litellm", "litellm[proxy]"), ("vllm-router", "vllm-router")):
        venv = PEERS_DIR / name
        if not (venv / "bin/python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin/pip"), "install", "-q", spec], check=True)


# --- the run ---------------------------------------------------------------------------------------
def measure_cell(server: Server, fig: Figures, wrk: Wrk, args: argparse.Namespace, size: int, mode: str) -> None:
    """One size and mode on one target: a warm-up, then the measured run."""
    wrk.run(server.url, "/v1/chat/completions", server.key, size, mode, args.warmup, args.connections)
    pid = server.pid()
    cpu0 = tree_cpu_s(pid) if pid > 0 else 0.0
    load = wrk.run(server.url, "/v1/chat/completions", server.key, size, mode, args.seconds, args.connections)
    fig.loads[(size, mode)] = load
    if pid > 0 and load.requests:
        fig.cpu_us[(size, mode)] = (tree_cpu_s(pid) - cpu0) / load.requests * 1e6
    print(f"  {server.name:<12} {size:>4} KB {mode:<10} {load.rps:8.0f} req/s  p50 {load.p50_ms:7.2f} ms  "
          f"p99 {load.p99_ms:7.2f} ms  cpu {fig.cpu_us.get((size, mode), float('nan')):6.0f} us/req  "
          f"errors {load.errors}", flush=True)


def measure(servers: dict[str, Server], wrk: Wrk, args: argparse.Namespace, sizes: list[int],
            modes: list[str], results: dict[str, Figures]) -> None:
    """Every size and mode, the targets one after the other within each (interleaved, so that a change
    in the machine's other load hits every target alike), then RSS and the one-connection runs."""
    for size in sizes:
        for mode in modes:
            for name, server in servers.items():
                try:
                    measure_cell(server, results[name], wrk, args, size, mode)
                except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                    print(f"  {name} {size} KB {mode}: failed ({exc})")
    for name, server in servers.items():
        if server.pid() > 0:
            results[name].rss_mib = tree_rss_mib(server.pid())
    for size in sizes:
        for name, server in servers.items():
            results[name].idle[size] = wrk.run(server.url, "/v1/chat/completions", server.key, size, "json",
                                               args.idle_seconds, 1)


def fmt(value: float, digits: int = 0) -> str:
    return "-" if value != value else f"{value:,.{digits}f}"


def report(results: dict[str, Figures], sizes: list[int], modes: list[str]) -> None:
    names = list(results)
    print("\nrequests/s (p50 / p99 ms) per target; gateway CPU per request in the gateway column")
    print(f"{'body':>6} {'mode':<10} " + " ".join(f"{n:>28}" for n in names))
    for size in sizes:
        for mode in modes:
            cells = []
            for n in names:
                load = results[n].loads.get((size, mode))
                if load is None:
                    cells.append(f"{'-':>28}")
                    continue
                text = f"{load.rps:,.0f} ({load.p50_ms:.1f}/{load.p99_ms:.1f})"
                if load.errors:
                    text += f" {load.errors}err"
                cells.append(f"{text:>28}")
            print(f"{size:>4}KB {mode:<10} " + " ".join(cells))
    print("\nper target: CPU us/request (1 KB json / stream / 128 KB json ...), RSS after load, cold start,"
          " added latency at 1 connection over the upstream directly (p50 / p99 ms, non-streaming)")
    direct = results.get("direct")
    for n in names:
        f = results[n]
        cpu = " ".join(f"{fmt(f.cpu_us.get((s, m), float('nan')))}" for s in sizes for m in modes)
        added = []
        for s in sizes:
            if direct is not None and s in f.idle and s in direct.idle and n != "direct":
                added.append(f"{s}KB +{f.idle[s].p50_ms - direct.idle[s].p50_ms:.2f}/+"
                             f"{f.idle[s].p99_ms - direct.idle[s].p99_ms:.2f}")
        print(f"  {n:<12} cpu us/req [{cpu}]  RSS {fmt(f.rss_mib)} MiB  cold start {fmt(f.cold_start_s, 2)} s "
              f"({fmt(f.cold_start_cpu_s, 2)} s CPU)  "
              f"added {', '.join(added) or '-'} {f.note}")
    gw = results.get("gateway")
    peers = [n for n in names if n not in ("gateway", "direct")]
    if gw is None or not peers:
        return
    print("\nratio table: gateway requests/s over each peer's (and over the upstream directly)")
    cols = [*peers, *(["direct"] if direct is not None else [])]
    print("| body | mode | gateway req/s | " + " | ".join(f"{c} req/s | gateway / {c}" for c in cols) + " |")
    print("|---|---|---|" + "---|---|" * len(cols))
    for size in sizes:
        for mode in modes:
            g = gw.loads.get((size, mode))
            if g is None:
                continue
            row = [f"{size} KB", mode, f"{g.rps:,.0f}"]
            for c in cols:
                p = results[c].loads.get((size, mode))
                row += [f"{p.rps:,.0f}", f"{g.rps / p.rps:.2f}x"] if p is not None and p.rps > 0 else ["-", "-"]
            print("| " + " | ".join(row) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s per run, 1 s warm-up, 2 s at one connection")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--idle-seconds", type=float, default=4)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--sizes", default="1,32,128", help="body sizes in KB")
    ap.add_argument("--modes", default="json,stream,stream-new")
    ap.add_argument("--targets", default="direct,gateway,litellm,vllm-router")
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--install-peers", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.idle_seconds = 2, 1, 2
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    if args.install_peers:
        install_peers()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    redis_proc, redis_url, redis_dir = start_redis(args.load_cpu)
    upstream_proc, upstream = start_upstream(args.load_cpu)
    workdir = Path(tempfile.mkdtemp(prefix="compare-"))
    wrk = Wrk(args.load_cpu, workdir)
    results: dict[str, Figures] = {}
    servers: dict[str, Server] = {}
    makers = {"direct": Direct, "gateway": lambda: Gateway(redis_url), "litellm": LiteLLM, "vllm-router": VllmRouter}
    print(f"load generator: wrk -t1 -c{args.connections}, {args.seconds:g} s per run on cpu {args.load_cpu}; "
          f"servers on cpu {args.server_cpu}", flush=True)
    try:
        for name in args.targets.split(","):
            server = makers[name]()
            why = server.available()
            if why:
                print(f"  {name}: skipped ({why})")
                continue
            try:  # one at a time, alone on the machine's load, for its cold start
                if isinstance(server, Gateway):
                    compile_bytecode(ROOT)  # as installed (the peers' packages are compiled by pip)
                    server.prepare(args.load_cpu)
                cold = server.spawn(args.server_cpu, upstream)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"  {name}: failed to start ({exc})")
                server.stop()
                continue
            servers[name] = server
            results[name] = Figures(cold_start_s=cold, cold_start_cpu_s=server.cold_cpu)
            print(f"  {name}: first 200 after {cold:.2f} s ({server.cold_cpu:.2f} s CPU)", flush=True)
        measure(servers, wrk, args, sizes, modes, results)
    finally:
        for server in servers.values():
            server.stop()
        upstream_proc.terminate()
        redis_proc.terminate()
        upstream_proc.wait(10)
        redis_proc.wait(10)
        shutil.rmtree(redis_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, sizes, modes)


if __name__ == "__main__":
    main()
