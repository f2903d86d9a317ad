"""Latency of a vote in `emu review` under load: 20 annotators casting 500 votes each at once.

The server is started as a user starts it (`emu review DIR --stage compare`), on 127.0.0.1, in
its own process; each annotator is a thread with its own keep-alive connection. Prints the
median and p99 latency of a vote and checks that every vote was stored.

    python bench/review_latency.py
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from emu_cli.human.store import AnnotationStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--votes", type=int, default=500, help="per annotator")
    args = parser.parse_args()
    pairs = args.votes // 2  # each pair gets an appeal and a faithfulness vote
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = AnnotationStore(root / "annotations.sqlite")
        with store.transaction():
            for i in range(pairs):
                store.add_comparison(f"pair-{i:04d}", "a red star", "a.png", "b.png", "A", "B")
        store.close()
        server = subprocess.Popen(
            [sys.executable, "-m", "emu_cli", "review", str(root), "--stage", "compare",
             "--port", "0", "--num-annotators", str(args.annotators)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        tokens, port = [], 0
        while len(tokens) < args.annotators:
            match = re.match(
                r"\S+: http://127\.0\.0\.1:(\d+)/\?token=(\S+)", server.stdout.readline()
            )
            if match:
                port, tokens = int(match[1]), [*tokens, match[2]]
        latencies: list[float] = []
        lock = threading.Lock()
        start = threading.Barrier(args.annotators)

        def annotate(token: str) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            mine = []
            start.wait()
            for i in range(pairs):
                for protocol, choice in (("appeal", "left"), ("faithfulness", "both")):
                    body = json.dumps({"item": f"pair-{i:04d}", "protocol": protocol,
                                       "choice": choice})  # fmt: skip
                    began = time.perf_counter()
                    connection.request("POST", "/api/vote", body=body, headers=headers)
                    response = connection.getresponse()
                    response.read()
                    mine.append(time.perf_counter() - began)
                    assert response.status == 200, response.status
            connection.close()
            with lock:
                latencies.extend(mine)

        began = time.perf_counter()
        threads = [threading.Thread(target=annotate, args=(t,)) for t in tokens]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        server.kill()
        server.wait()
        stored = len(AnnotationStore(root / "annotations.sqlite").votes())
    milliseconds = np.array(latencies) * 1000
    result = {
        "annotators": args.annotators,
        "votes": len(latencies),
        "stored": stored,
        "median_ms": round(float(np.median(milliseconds)), 2),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 2),
        "max_ms": round(float(milliseconds.max()), 2),
        "votes_per_s": round(len(latencies) / elapsed, 1),
        "target_p99_ms": 50,
    }
    print(f"{result['votes']} votes from {args.annotators} annotators at once, {stored} stored")
    print(f"median {result['median_ms']} ms, p99 {result['p99_ms']} ms (target < 50 ms), "
          f"{result['votes_per_s']} votes/s")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
