"""Real servers on loopback for the tests: nginx, started and stopped by the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NGINX_CONF = """
{user}
worker_processes 1;
daemon off;
master_process on;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format uri '$request_uri';
    {access_log}
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port};
        location = / {{ return 200 "ok\\n"; }}
        location = /hello {{ default_type text/plain; return 200 "hello world\\n"; }}
        location = /json {{
            default_type application/json;
            return 200 '{{"data": {{"access_token": "abc", "items": [1, 2, 3]}}}}';
        }}
        location /u {{ return 200 "ok\n"; }}
        location = /status/404 {{ return 404; }}
        location = /status/500 {{ return 500; }}
        location = /close {{ keepalive_timeout 0; return 200 "bye\\n"; }}
        location /static/ {{ alias {root}/static/; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@contextmanager
def run_nginx(root: Path, *, log_uris: bool = False) -> Iterator[str]:
    """Start nginx on a free loopback port; yield its base URL; stop it after.
    With ``log_uris`` it writes every request URI to ``root / "access.log"``."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed: apt-get install nginx-light")
    root.mkdir(parents=True, exist_ok=True)
    (root / "static").mkdir(exist_ok=True)
    (root / "static" / "big.bin").write_bytes(b"x" * 200_000)
    port = free_port()
    conf = root / "nginx.conf"
    # As root, nginx's workers would switch to "nobody", who cannot read the
    # test's private temporary folders; keep them as the user that started it.
    user = "user root;" if os.geteuid() == 0 else ""
    access_log = f"access_log {root}/access.log uri;" if log_uris else "access_log off;"
    conf.write_text(
        NGINX_CONF.format(root=root, port=port, user=user, access_log=access_log)
    )
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-p", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
