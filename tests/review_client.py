"""Starting `emu review` as a user does, and talking to it over HTTP, for the review tests."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from conftest import EMU


@contextmanager
def serve(data: Path, stage: str, annotators: int = 1, *extra: str):
    """A running `emu review` on 127.0.0.1 (a free port); yields (port, tokens, process)."""
    process = subprocess.Popen(
        [*EMU, "review", str(data), "--stage", stage, "--port", "0",
         "--num-annotators", str(annotators), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    tokens, port = {}, None
    deadline = time.time() + 120
    while len(tokens) < annotators and time.time() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"emu review exited: {process.stderr.read()[-2000:]}")
        match = re.match(r"(\S+): http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        if match:
            tokens[match[1]] = match[3]
            port = int(match[2])
    try:
        yield port, tokens, process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def request(port: int, method: str, path: str, token: str | None = None, body=None):
    """(status, decoded JSON or bytes) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = None if body is None else json.dumps(body)
    connection.request(method, path, body=payload, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    if response.getheader("Content-Type", "").startswith("application/json"):
        return response.status, json.loads(data)
    return response.status, data
