"""`emu review`: tokens, what it serves, no vote lost under load, restart, export."""

import http.client
import json
import shutil
import subprocess
import threading
import time

import pytest
from review_client import request, serve

from conftest import EMU, emu
from emu_cli.data import index_dataset
from emu_cli.human.store import AnnotationStore


@pytest.fixture
def pool(world, tmp_path):
    """A copy of the world pool in its own folder, so each test has its own database."""
    import shutil

    return shutil.copytree(world, tmp_path / "pool")


def test_every_request_needs_a_token_and_only_dataset_images_are_served(pool):
    key = index_dataset(pool).samples[0].key
    with serve(pool, "generalist", 2) as (port, tokens, _):
        token = tokens["annotator-1"]
        assert request(port, "GET", "/api/items")[0] == 401
        assert request(port, "GET", "/api/items", "not-a-token")[0] == 401
        assert request(port, "GET", f"/image/{key}")[0] == 401
        assert request(port, "GET", f"/?token={token}")[0] == 200
        status, image = request(port, "GET", f"/image/{key}?token={token}")
        assert status == 200 and image == (pool / key).read_bytes()
        for attempt in ("../metadata.jsonl", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd",
                        "images/../metadata.jsonl", "%2e%2e/%2e%2e/etc/passwd"):  # fmt: skip
            assert request(port, "GET", f"/image/{attempt}?token={token}")[0] == 404, attempt
        status, error = request(port, "POST", "/api/decide", token, {"item": "../x", "keep": 1})
        assert status == 404 and "no item" in error["error"]
        assert request(port, "POST", "/api/decide", token, {"item": key})[0] == 400
        # "false" is text, and text is true to Python: only a boolean decides
        for body, message in (
            ({"item": key, "keep": "false"}, "keep must be true or false, got 'false'"),
            ({"item": key, "keep": True, "checklist": ["lighting"]}, "checklist must map"),
            ({"item": key, "keep": True, "checklist": {"lighting": "yes"}}, "checklist must map"),
        ):
            status, error = request(port, "POST", "/api/decide", token, body)
            assert status == 400 and message in error["error"], error
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/api/decide")
        for header, value in (("Authorization", f"Bearer {token}"), ("Content-Length", "lots")):
            connection.putheader(header, value)
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 400
        connection.close()
        assert request(port, "GET", "/api/items", token)[1]["items"][0]["decision"] is None
        assert request(port, "POST", "/api/vote", token, {"item": key})[0] == 404


def test_listens_beyond_loopback_only_when_allowed_and_says_so(pool, tmp_path):
    config = tmp_path / "review.yaml"
    config.write_text("host: 0.0.0.0\n")
    for given in (("--config", config), ("--host", "0.0.0.0")):
        result = emu("review", pool, "--stage", "generalist", *given, check=False)
        assert result.returncode == 2 and "pass --allow-remote" in result.stderr
    process = subprocess.Popen(
        [*EMU, "review", pool, "--stage", "generalist", "--host", "0.0.0.0", "--port", "0",
         "--allow-remote"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert "http://0.0.0.0:" in process.stdout.readline(), "it serves"
    finally:
        process.kill()
        _, stderr = process.communicate()
    assert "warning: listening on 0.0.0.0: anyone who can reach it" in stderr

    # a port another program holds is said as such, with the way out
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        result = emu("review", pool, "--stage", "generalist", "--port", taken, check=False)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{taken} (Address already in use)" in result.stderr


@pytest.mark.slow
def test_no_vote_is_lost_with_twenty_annotators_at_once(tmp_path):
    """20 annotators cast 500 votes each, all at once: exactly 10,000 votes are stored."""
    folder = tmp_path / "evaluation"
    store = AnnotationStore(folder / "annotations.sqlite")
    with store.transaction():
        for i in range(250):
            store.add_comparison(f"pair-{i:03d}", "a red star", "a.png", "b.png", "A", "B")
    store.close()
    with serve(folder, "compare", 20) as (port, tokens, _):
        failures = []

        def annotate(token: str) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            try:
                for i in range(250):
                    for protocol, choice in (("appeal", "left"), ("faithfulness", "both")):
                        body = json.dumps({"item": f"pair-{i:03d}", "protocol": protocol,
                                           "choice": choice})  # fmt: skip
                        connection.request("POST", "/api/vote", body=body, headers=headers)
                        response = connection.getresponse()
                        response.read()
                        if response.status != 200:
                            failures.append(response.status)
            except OSError as error:  # http.client's errors included
                failures.append(repr(error))
            finally:
                connection.close()

        threads = [threading.Thread(target=annotate, args=(t,)) for t in tokens.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not failures
        status, progress = request(port, "GET", "/api/progress", tokens["annotator-1"])
        assert progress["votes"] == 10_000
    store = AnnotationStore(folder / "annotations.sqlite")
    votes = store.votes()
    assert len(votes) == 10_000
    assert {v.annotator for v in votes} == set(tokens)
    # "left" was stored as the model shown on the left, which differs from pair to pair.
    appeal = [v for v in votes if v.protocol == "appeal"]
    assert all(v.choice == v.shown_left for v in appeal)
    assert 0.3 < sum(v.shown_left == "a" for v in appeal) / len(appeal) < 0.7


def test_a_killed_server_restarts_with_every_decision(pool):
    keys = [s.key for s in index_dataset(pool).samples[:10]]
    with serve(pool, "generalist", 1) as (port, tokens, process):
        token = tokens["annotator-1"]
        for i, key in enumerate(keys):
            assert (
                request(port, "POST", "/api/decide", token, {"item": key, "keep": i % 2 == 1})[0]
                == 200
            )
        assert request(port, "POST", "/api/undo", token, {"item": keys[0]})[0] == 200
    assert process.returncode == -9
    with serve(pool, "generalist", 1) as (port, again, _):
        assert again == tokens, "a restarted server keeps the annotators' tokens"
        items = request(port, "GET", "/api/items", again["annotator-1"])[1]["items"]
        decided = {i["key"]: i["decision"]["keep"] for i in items if i["decision"]}
    assert decided == {key: bool(i % 2) for i, key in enumerate(keys) if i > 0}


def test_stages_chain_and_export_feeds_quality_tuning(pool, tmp_path):
    samples = index_dataset(pool).samples
    keys = [s.key for s in samples[:6]]
    with serve(pool, "generalist", 2) as (port, tokens, _):
        for i, key in enumerate(keys):  # annotator-1 keeps the first four; -2 only the first
            request(
                port, "POST", "/api/decide", tokens["annotator-1"], {"item": key, "keep": i < 4}
            )
            request(
                port, "POST", "/api/decide", tokens["annotator-2"], {"item": key, "keep": i < 1}
            )
        progress = request(port, "GET", "/api/progress", tokens["annotator-1"])[1]
        assert progress["by"] == {"annotator-1": 6, "annotator-2": 6}
        # They agree on 3 of 6; keep rate 5/12, so chance agreement is (5/12)^2 + (7/12)^2
        # = 0.5139 and Fleiss' kappa (0.5 - 0.5139) / (1 - 0.5139) = -0.0286.
        assert progress["agreement"] == {"items": 6, "pairwise": 0.5, "kappa": -0.0286}
    with serve(pool, "specialist", 1) as (port, tokens, _):
        token = tokens["annotator-1"]
        items = request(port, "GET", "/api/items", token)[1]["items"]
        assert [i["key"] for i in items] == keys[:4], "specialists see what generalists kept"
        for key in keys[:3]:
            checklist = {"composition": True, "lighting": key != keys[2]}
            body = {"item": key, "keep": key != keys[2], "checklist": checklist}
            assert request(port, "POST", "/api/decide", token, body)[0] == 200
        bad = {"item": keys[3], "keep": True, "checklist": {"vibes": True}}
        assert request(port, "POST", "/api/decide", token, bad)[0] == 400
    with serve(pool, "caption", 1) as (port, tokens, _):
        token = tokens["annotator-1"]
        items = request(port, "GET", "/api/items", token)[1]["items"]
        assert [i["key"] for i in items] == keys[:2]
        body = {"item": keys[0], "text": "a hand-written caption"}
        assert request(port, "POST", "/api/caption", token, body)[0] == 200
        assert (
            request(port, "POST", "/api/caption", token, {"item": keys[1], "text": " "})[0] == 400
        )
        # the exported set's reader would drop a caption this long as spam: refused, not lost
        status, error = request(
            port, "POST", "/api/caption", token, {"item": keys[1], "text": "word " * 500}
        )
        assert status == 400 and "at most 2000" in error["error"]

    out = tmp_path / "curated"
    emu("review", pool, "--stage", "caption", "--export", out)
    records = [json.loads(line) for line in (out / "metadata.jsonl").open()]
    assert [r["source_key"] for r in records] == keys[:2]
    assert records[0]["text"] == "a hand-written caption"
    assert records[1]["text"] == samples[1].caption
    assert index_dataset(out).samples, "the export is an image folder the trainer reads"


def _raw(port: int, data: bytes) -> bytes:
    """What the server answers to ``data`` sent as is on one connection."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_malformed_requests_get_400_and_links_out_of_the_data_are_not_served(pool, tmp_path):
    import socket

    samples = index_dataset(pool).samples
    secret = tmp_path / "secret.png"  # outside the data, reached through a link inside it
    secret.write_bytes((pool / samples[1].key).read_bytes())
    (pool / samples[1].key).unlink()
    (pool / samples[1].key).symlink_to(secret)
    key = samples[0].key
    with serve(pool, "generalist", 1) as (port, tokens, process):
        token = tokens["annotator-1"]
        status, _ = request(port, "GET", f"/image/{samples[1].key}?token={token}")
        assert status == 404, "a link pointing out of the data is not followed"
        head = f"POST /api/decide HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        for body in (
            b"[" * 30_000 + b"]" * 30_000,  # nesting deeper than Python's stack
            b'{"item": ' + b"9" * 5000 + b', "keep": true}',  # a 5,000-digit number
            b'{"item": "\xff\xfe", "keep": true}',  # not UTF-8
            json.dumps({"item": key, "keep": True, "checklist": [[[[]]]] * 10}).encode(),
        ):
            answer = _raw(port, f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
        for length in ("lots", "-1", "99999999999999999999"):
            answer = _raw(port, f"{head}Content-Length: {length}\r\n\r\n{{}}".encode())
            assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 413")), (length, answer[:200])
        body = json.dumps({"item": key, "keep": True}).encode()
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        answer = _raw(port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunked)
        assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1, answer
        # connections that never send a byte do not hold up the annotators
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(500)]
        try:
            started = time.monotonic()
            items = request(port, "GET", "/api/items", token)[1]["items"]
            assert time.monotonic() - started < 10
        finally:
            for connection in idle:
                connection.close()
        assert process.poll() is None, "the server lives on"
    assert items[0]["key"] == key and items[0]["decision"] == {"keep": True, "checklist": None}
    assert "Traceback" not in process.stderr.read()


def test_datasets_beside_each_other_keep_their_own_decisions(world, tmp_path):
    from emu_cli.world.synth import synthesize

    first = shutil.copytree(world, tmp_path / "batch1")
    second = synthesize(40, tmp_path / "batch2", seed=2, size=32, workers=1)
    keys = [s.key for s in index_dataset(first).samples[:3]]
    assert {s.key for s in index_dataset(second).samples} >= set(keys), "the same file names"
    with serve(first, "generalist", 1) as (port, tokens, process):
        for key in keys:
            request(port, "POST", "/api/decide", tokens["annotator-1"], {"item": key, "keep": True})
    store = tmp_path / "annotations.sqlite"
    assert f"decisions are stored in {store}" in process.stderr.read()
    with serve(second, "generalist", 1) as (port, tokens, _):
        items = request(port, "GET", "/api/items", tokens["annotator-1"])[1]["items"]
        assert not [item for item in items if item["decision"]], "batch1's are not batch2's"
    exported = emu("review", second, "--stage", "generalist", "--export", tmp_path / "out2")
    assert "exported 0 images" in exported.stdout
    assert "40 of 40 items have no generalist decision" in exported.stderr
    emu("review", first, "--stage", "generalist", "--export", tmp_path / "out1")
    assert len(index_dataset(tmp_path / "out1").samples) == 3

    # a folder moved whole keeps its decisions; a store of its own is named with --store
    moved = shutil.move(first, tmp_path / "moved")
    emu("review", moved, "--stage", "generalist", "--export", tmp_path / "out3")
    assert len(index_dataset(tmp_path / "out3").samples) == 3
    elsewhere = tmp_path / "elsewhere.sqlite"
    with serve(second, "generalist", 1, "--store", elsewhere) as (port, tokens, _):
        request(port, "POST", "/api/decide", tokens["annotator-1"], {"item": keys[0], "keep": True})
    own = emu("review", second, "--stage", "generalist", "--store", elsewhere,
              "--export", tmp_path / "out4")  # fmt: skip
    assert "exported 1 images" in own.stdout


def test_a_store_from_before_datasets_keeps_its_decisions(pool):
    import sqlite3

    keys = [s.key for s in index_dataset(pool).samples[:2]]
    with sqlite3.connect(pool.parent / "annotations.sqlite") as old:  # the schema before
        old.executescript(
            "CREATE TABLE annotators (name TEXT PRIMARY KEY, kind TEXT NOT NULL, created REAL);"
            "CREATE TABLE decisions (stage TEXT NOT NULL, item TEXT NOT NULL, annotator TEXT,"
            " keep INTEGER, checklist TEXT, created REAL, PRIMARY KEY (stage, item, annotator));"
            "CREATE TABLE captions (item TEXT NOT NULL, annotator TEXT, text TEXT, created REAL,"
            " PRIMARY KEY (item, annotator));"
            "INSERT INTO annotators VALUES ('annotator-1', 'person', 0);"
        )
        old.executemany("INSERT INTO decisions VALUES ('generalist', ?, 'annotator-1', 1, NULL, 0)",
                        [(k,) for k in keys])  # fmt: skip
    exported = emu("review", pool, "--stage", "generalist", "--export", pool.parent / "out")
    assert "exported 2 images" in exported.stdout
