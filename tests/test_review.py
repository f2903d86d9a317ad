"""`emu review`: tokens, what it serves, no vote lost under load, restart, export."""

import http.client
import json
import threading

import pytest
from review_client import request, serve

from conftest import emu
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
        assert response.status == 400 and b"Content-Length must be" in response.read()
        connection.close()
        assert request(port, "GET", "/api/items", token)[1]["items"][0]["decision"] is None
        assert request(port, "POST", "/api/vote", token, {"item": key})[0] == 404


def test_refuses_a_non_loopback_address_unless_given_explicitly(pool, tmp_path):
    config = tmp_path / "review.yaml"
    config.write_text("host: 0.0.0.0\n")
    result = emu("review", pool, "--stage", "generalist", "--config", config, check=False)
    assert result.returncode == 2 and "give --host explicitly" in result.stderr

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
