"""``emu review``: a local web app for the paper's human stages and side-by-side evaluation.

One threaded HTTP server, one SQLite file (WAL) shared with the simulated annotators and with
``emu evaluate``. Every request carries an annotator's token (``Authorization: Bearer`` or
``?token=``); every decision is its own committed write, so a killed server loses nothing it
answered. Images are looked up by their key in the dataset (or the comparison's id), never by a
path from the request, so nothing outside the data can be served.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from emu_cli.data.sources import Sample
from emu_cli.human.store import CHECKLIST, AnnotationStore

STAGES = ("generalist", "specialist", "caption", "compare")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
POOL_SIZE = 8


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def store_path(data: Path, stage: str) -> Path:
    """Where a stage's database lives: an evaluation folder holds its own; an image folder's
    sits beside it (the folder itself is replaced whole when it is written again)."""
    data = Path(data)
    return data / "annotations.sqlite" if stage == "compare" else data.parent / "annotations.sqlite"


@dataclass
class ReviewData:
    """What a stage shows: samples of an image folder, or the comparisons of an evaluation."""

    root: Path
    stage: str
    samples: dict[str, Sample]
    comparisons: dict[str, dict[str, Any]]

    @classmethod
    def open(cls, root: Path, stage: str, store: AnnotationStore) -> ReviewData:
        from emu_cli.data import index_dataset

        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}, got '{stage}'")
        root = Path(root)
        if stage == "compare":
            comparisons = store.comparisons()
            if not comparisons:
                raise ValueError(
                    f"'{root}' holds no comparisons; make them with `emu evaluate --annotators "
                    f"review --out {root}`"
                )
            return cls(root, stage, {}, comparisons)
        index = index_dataset(root)
        samples = {s.key: s for s in index.samples}
        # A later stage shows what the one before it kept, when that one was done here.
        previous = {"specialist": "generalist", "caption": "specialist"}.get(stage)
        if previous:
            policy = "any" if previous == "generalist" else "majority"
            kept = store.kept(previous, policy)
            if kept:
                samples = {k: v for k, v in samples.items() if k in kept}
        return cls(root, stage, samples, {})

    def image(self, key: str, side: str | None) -> tuple[bytes, str]:
        from emu_cli.data.dataset import read_bytes
        from emu_cli.data.export import image_suffix

        if self.stage == "compare":
            pair = self.comparisons.get(key)
            if pair is None or side not in ("a", "b"):
                raise RequestError(HTTPStatus.NOT_FOUND, "no such image")
            data = (self.root / pair[f"image_{side}"]).read_bytes()
        else:
            sample = self.samples.get(key)
            if sample is None:
                raise RequestError(HTTPStatus.NOT_FOUND, "no such image")
            data = read_bytes(sample)
        return data, CONTENT_TYPES.get(image_suffix(data), "application/octet-stream")


def shown_left(annotator: str, comparison: str) -> str:
    """Which model an annotator sees on the left: random across pairs, fixed per pair."""
    digest = hashlib.sha256(f"{annotator}/{comparison}".encode()).digest()
    return "a" if digest[0] % 2 == 0 else "b"


class ReviewApp:
    def __init__(self, data: ReviewData, database: Path):
        self.data = data
        self.database = database
        self._pool: queue.Queue[AnnotationStore] = queue.Queue()
        for _ in range(POOL_SIZE):
            self._pool.put(AnnotationStore(database))
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[AnnotationStore]:
        store = self._pool.get()
        try:
            yield store
        finally:
            self._pool.put(store)

    def close(self) -> None:
        while not self._pool.empty():
            self._pool.get().close()

    def annotator(self, token: str | None) -> str:
        if not token:
            raise RequestError(HTTPStatus.UNAUTHORIZED, "a token is required")
        with self._lock:
            known = self._tokens.get(token)
        if known is None:
            with self.store() as store:
                known = store.annotator_for(token)
            if known is None:
                raise RequestError(HTTPStatus.UNAUTHORIZED, "unknown token")
            with self._lock:
                self._tokens[token] = known
        return known

    # -- the API ---------------------------------------------------------------------------
    def items(self, annotator: str) -> dict[str, Any]:
        stage = self.data.stage
        with self.store() as store:
            if stage == "compare":
                voted: dict[str, dict[str, str]] = {}
                for vote in store.votes():
                    if vote.annotator == annotator:
                        voted.setdefault(vote.comparison, {})[vote.protocol] = vote.choice
                items = [
                    {
                        "key": key,
                        "prompt": pair["prompt"],
                        "left": shown_left(annotator, key),
                        "votes": voted.get(key, {}),
                    }
                    for key, pair in sorted(self.data.comparisons.items())
                ]
            elif stage == "caption":
                written = store.captions()
                items = [
                    {"key": k, "caption": written.get(k, s.caption), "written": k in written}
                    for k, s in self.data.samples.items()
                ]
            else:
                mine = store.decisions_of(stage, annotator)
                items = [
                    {"key": k, "caption": s.caption, "decision": mine.get(k)}
                    for k, s in self.data.samples.items()
                ]
        return {"stage": stage, "annotator": annotator, "checklist": CHECKLIST, "items": items}

    def act(self, annotator: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        stage = self.data.stage
        item = str(body.get("item", ""))
        known = self.data.comparisons if stage == "compare" else self.data.samples
        if item not in known:
            raise RequestError(HTTPStatus.NOT_FOUND, f"no item '{item}' in this stage")
        with self.store() as store:
            try:
                if action == "decide" and stage in ("generalist", "specialist"):
                    checklist = body.get("checklist")
                    store.decide(stage, item, annotator, body["keep"], checklist)
                elif action == "undo" and stage in ("generalist", "specialist"):
                    store.undo(stage, item, annotator)
                elif action == "caption" and stage == "caption":
                    store.write_caption(item, annotator, str(body.get("text", "")))
                elif action == "vote" and stage == "compare":
                    left = shown_left(annotator, item)
                    choice = str(body.get("choice", ""))
                    # The page speaks of sides; the store of models.
                    side = {"left": left, "right": "b" if left == "a" else "a"}
                    store.vote(item, str(body.get("protocol")), annotator, left,
                               side.get(choice, choice))  # fmt: skip
                else:
                    raise RequestError(
                        HTTPStatus.NOT_FOUND, f"no action '{action}' in stage '{stage}'"
                    )
            except (KeyError, ValueError) as error:
                raise RequestError(HTTPStatus.BAD_REQUEST, str(error)) from error
        return {"ok": True}

    def progress(self) -> dict[str, Any]:
        stage = self.data.stage
        with self.store() as store:
            if stage == "compare":
                votes = store.votes()
                per: dict[str, int] = {}
                for vote in votes:
                    per[vote.annotator] = per.get(vote.annotator, 0) + 1
                return {"items": len(self.data.comparisons), "votes": len(votes), "by": per}
            if stage == "caption":
                return {"items": len(self.data.samples), "captions": len(store.captions())}
            return {
                "items": len(self.data.samples),
                "by": store.progress(stage),
                "agreement": store.agreement(stage),
            }


# A vote, a decision or a caption is a few hundred bytes; a caption is at most MAX_CAPTION_CHARS.
MAX_BODY = 64 * 1024


class Handler(BaseHTTPRequestHandler):
    app: ReviewApp
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        return  # quiet: one line per vote would drown the printed tokens

    def _token(self, query: dict[str, list[str]]) -> str | None:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header.removeprefix("Bearer ").strip()
        return (query.get("token") or [None])[0]

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _handle(self, method: str) -> None:
        from emu_cli.human.pages import page

        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.split("/") if p]
        try:
            annotator = self.app.annotator(self._token(query))
            body: dict[str, Any] = {}
            if method == "POST":
                length = self.headers.get("Content-Length") or "0"
                if not length.isdigit() or int(length) > MAX_BODY:
                    message = f"Content-Length must be a count of bytes up to {MAX_BODY}"
                    raise RequestError(HTTPStatus.BAD_REQUEST, message)
                try:
                    body = json.loads(self.rfile.read(int(length)) or b"{}")
                except json.JSONDecodeError as error:
                    message = f"body is not JSON: {error}"
                    raise RequestError(HTTPStatus.BAD_REQUEST, message) from error
                if not isinstance(body, dict):
                    raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
            if method == "GET" and not parts:
                html = page(self.app.data.stage, annotator, self._token(query) or "")
                return self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")
            if method == "GET" and parts[0] == "image" and len(parts) >= 2:
                side = query.get("side", [None])[0]
                data, kind = self.app.data.image("/".join(parts[1:]), side)
                return self._send(HTTPStatus.OK, data, kind)
            if method == "GET" and parts == ["api", "items"]:
                return self._json(HTTPStatus.OK, self.app.items(annotator))
            if method == "GET" and parts == ["api", "progress"]:
                return self._json(HTTPStatus.OK, self.app.progress())
            if method == "POST" and len(parts) == 2 and parts[0] == "api":
                return self._json(HTTPStatus.OK, self.app.act(annotator, parts[1], body))
            raise RequestError(HTTPStatus.NOT_FOUND, "not found")
        except RequestError as error:
            self._json(error.status, {"error": str(error)})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self._handle("POST")


class ReviewServer(ThreadingHTTPServer):
    # Many annotators connect at once; the default listen backlog of 5 would refuse some.
    request_queue_size = 128
    daemon_threads = True


def make_server(data: Path, stage: str, *, host: str, port: int, annotators: int):
    """(server, tokens by annotator): a bound server, not yet serving."""
    database = store_path(data, stage)
    store = AnnotationStore(database)
    try:
        names = [f"annotator-{i}" for i in range(1, annotators + 1)]
        tokens = store.issue_tokens(names)
        review = ReviewData.open(data, stage, store)
    finally:
        store.close()
    app = ReviewApp(review, database)
    handler = type("BoundHandler", (Handler,), {"app": app})
    server = ReviewServer((host, port), handler)
    server.app = app  # type: ignore[attr-defined]
    return server, tokens
