"""What the resource monitor costs: its CPU time per second of a run.

How this works
--------------
This process runs the harness's :class:`~harness.monitor.monitor.Monitor` alone,
exactly as the coordinator does (the same threads, samplers and Parquet writer),
against a target started from a command: a small HTTP server with ``--children``
sleeping child processes. Two more sleeping processes stand in for the harness's
workers, and this process for the coordinator, so one tick samples the target tree,
the host and three harness processes. The main thread only sleeps, so this
process's CPU time (user plus system, ``getrusage``) over ``--seconds`` is the
monitor's; the target's own CPU, in its children, is not counted.

    .venv/bin/python benchmarks/monitor_cost.py                 # 30 s, 1 s interval
    .venv/bin/python benchmarks/monitor_cost.py --seconds 60 --children 8

The figure is printed and written to ``benchmarks/results/monitor-cost-*.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.monitor.monitor import Monitor
from harness.profile.model import MonitorSettings, MonitorTarget

RESULTS = Path(__file__).resolve().parent / "results"

TARGET = """
import subprocess, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

kids = [
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    for _ in range(int(sys.argv[2]))
]

class Ok(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
"""


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(seconds: float, interval_s: float, children: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        script = folder / "target.py"
        script.write_text(TARGET)
        port = free_port()
        settings = MonitorSettings(
            interval_s=interval_s,
            target=MonitorTarget(
                command=(sys.executable, str(script), str(port), str(children)),
                ready_url=f"http://127.0.0.1:{port}/",
            ),
        )
        workers = [
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            for _ in range(2)
        ]
        try:
            monitor = Monitor(settings, f"http://127.0.0.1:{port}")
            monitor.open()
            monitor.start(folder, {})
            monitor.watch_workers({i: w.pid for i, w in enumerate(workers)})
            time.sleep(interval_s)  # past the first tick, which primes CPU readings
            cpu0, wall0 = cpu_s(), time.monotonic()
            time.sleep(seconds)
            cpu1, wall1 = cpu_s(), time.monotonic()
            monitor.stop()
        finally:
            for w in workers:
                w.kill()
                w.wait()
        frame = pd.concat(
            pd.read_parquet(p) for p in sorted((folder / "resources").glob("*.parquet"))
        )
    ticks = frame[frame["source"] == "host"]["time_ns"].nunique()
    used_s = cpu1 - cpu0
    span_s = wall1 - wall0
    return {
        "seconds": round(span_s, 3),
        "interval_s": interval_s,
        "target_processes": children + 1,
        "harness_processes": 3,
        "ticks": int(ticks),
        "rows": len(frame),
        "cpu_s": round(used_s, 4),
        "cpu_percent_of_one_core": round(100.0 * used_s / span_s, 3),
        "cpu_ms_per_tick": round(1000.0 * used_s / (span_s / interval_s), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--children", type=int, default=4)
    args = parser.parse_args()
    result = measure(args.seconds, args.interval, args.children)
    result["host"] = {"platform": platform.platform(), "python": sys.version.split()[0]}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    name = time.strftime("monitor-cost-%Y%m%d-%H%M%S.json")
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS / name}")


if __name__ == "__main__":
    main()
