"""``emu review``: a local web app for the paper's human stages and side-by-side evaluation.

A WSGI app served by waitress, one SQLite file (WAL) shared with the simulated annotators and
with ``emu evaluate``. Every request carries an annotator's token (``Authorization: Bearer`` or
``?token=``); every decision is its own committed write, so a killed server loses nothing it
answered. Images are looked up by their key in the dataset (or the comparison's id), never by a
path from the request, and served only when their resolved path lies inside the data, so nothing
outside it can be served. waitress answers malformed HTTP with 400, reads chunked bodies, closes
idle connections and runs the app on a fixed number of threads; the app answers a body that is
not a small JSON object with 400.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from emu_cli.data.sources import Sample
from emu_cli.errors import EmuError
from emu_cli.human.store import CHECKLIST, AnnotationStore, Dataset

STAGES = ("generalist", "specialist", "caption", "compare")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
THREADS = 8  # requests served at once; each has a store connection of its own
# Open connections: idle ones cost a socket, not a thread (waitress polls them), and are closed
# after IDLE_SECONDS; past the limit new ones wait until some close.
CONNECTIONS = 1000
IDLE_SECONDS = 60  # an idle or stalled connection is closed after this
# A vote, a decision or a caption is a few hundred bytes; a caption is at most MAX_CAPTION_CHARS.
MAX_BODY = 64 * 1024
log = logging.getLogger("emu")


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


# Generalists cut for recall: an image any of them kept goes on. Specialists cut for precision:
# it takes a majority of those who saw it.
POLICIES = {"generalist": "any", "specialist": "majority"}


def store_path(data: Path, stage: str) -> Path:
    """Where a stage's database lives: an evaluation folder holds its own; an image folder's
    sits beside it (the folder itself is replaced whole when it is written again)."""
    data = Path(data)
    return data / "annotations.sqlite" if stage == "compare" else data.parent / "annotations.sqlite"


@dataclass
class ReviewData:
    """What a stage shows: samples of an image folder, or the comparisons of an evaluation;
    ``dataset`` is the image folder as the store knows it (None for comparisons)."""

    root: Path
    stage: str
    samples: dict[str, Sample]
    comparisons: dict[str, dict[str, Any]]
    dataset: Dataset | None = None

    @classmethod
    def open(cls, root: Path, stage: str, database: Path) -> ReviewData:
        from emu_cli.data import index_dataset

        if stage not in STAGES:
            raise EmuError(f"stage must be one of {', '.join(STAGES)}, got '{stage}'")
        root = Path(root)
        if stage == "compare":
            store = AnnotationStore(database)
            try:
                comparisons = store.comparisons()
            finally:
                store.close()
            if not comparisons:
                raise EmuError(
                    f"'{root}' holds no comparisons; make them with `emu evaluate --annotators "
                    f"review --out {root}`"
                )
            return cls(root, stage, {}, comparisons)
        index = index_dataset(root, captions_for=None)  # people review pixels; they write captions
        dataset = Dataset.of(index)
        samples = {s.key: s for s in index.samples}
        # A later stage shows what the one before it kept, when that one was done here.
        previous = {"specialist": "generalist", "caption": "specialist"}.get(stage)
        if previous:
            store = AnnotationStore(database, dataset)
            try:
                kept = store.kept(previous, POLICIES[previous])
            finally:
                store.close()
            if kept:
                samples = {k: v for k, v in samples.items() if k in kept}
        return cls(root, stage, samples, {}, dataset)

    def inside(self, path: Path) -> Path:
        """``path`` resolved, when it lies inside the data (a link out of it does not)."""
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.root.resolve()):
            raise RequestError(HTTPStatus.NOT_FOUND, "no such image")
        return resolved

    def image(self, key: str, side: str | None) -> tuple[bytes, str]:
        from emu_cli.data.dataset import read_bytes
        from emu_cli.data.export import image_suffix

        if self.stage == "compare":
            pair = self.comparisons.get(key)
            if pair is None or side not in ("a", "b"):
                raise RequestError(HTTPStatus.NOT_FOUND, "no such image")
            data = self.inside(self.root / pair[f"image_{side}"]).read_bytes()
        else:
            sample = self.samples.get(key)
            if sample is None:
                raise RequestError(HTTPStatus.NOT_FOUND, "no such image")
            self.inside(Path(sample.path))
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
        for _ in range(THREADS):
            self._pool.put(AnnotationStore(database, data.dataset))
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
        item = body.get("item")
        if not isinstance(item, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, "the body's item must be a string")
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
            except (KeyError, ValueError, TypeError, RecursionError) as error:
                raise RequestError(HTTPStatus.BAD_REQUEST, f"bad {action}: {error}") from error
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

    # -- HTTP ------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """The WSGI entry: every answer is a page, an image or JSON, errors included."""
        try:
            status, body, kind = self._answer(environ)
        except RequestError as error:
            status, body, kind = error.status, _json({"error": str(error)}), JSON
        except Exception:  # a bug of ours: logged here, a short 500 there
            log.exception("emu review: a request failed")
            status, body, kind = HTTPStatus.INTERNAL_SERVER_ERROR, _json({"error": "failed"}), JSON
        start_response(
            f"{status.value} {status.phrase}",
            [("Content-Type", kind), ("Content-Length", str(len(body))),
             ("Cache-Control", "no-store")],
        )  # fmt: skip
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[HTTPStatus, bytes, str]:
        from emu_cli.human.pages import guide, page

        method = environ["REQUEST_METHOD"]
        query = parse_qs(environ.get("QUERY_STRING", ""))
        parts = [unquote(p) for p in environ.get("PATH_INFO", "").split("/") if p]
        header = environ.get("HTTP_AUTHORIZATION", "")
        token = (
            header.removeprefix("Bearer ").strip()
            if header.startswith("Bearer ")
            else (query.get("token") or [None])[0]
        )
        annotator = self.annotator(token)
        if method == "GET" and not parts:
            html = page(self.data.stage, annotator, token or "")
            return HTTPStatus.OK, html.encode(), "text/html; charset=utf-8"
        if method == "GET" and parts == ["guide"]:
            html = guide(self.data.stage, token or "")
            return HTTPStatus.OK, html.encode(), "text/html; charset=utf-8"
        if method == "GET" and parts[0] == "image" and len(parts) >= 2:
            side = query.get("side", [None])[0]
            data, kind = self.data.image("/".join(parts[1:]), side)
            return HTTPStatus.OK, data, kind
        if method == "GET" and parts == ["api", "items"]:
            return HTTPStatus.OK, _json(self.items(annotator)), JSON
        if method == "GET" and parts == ["api", "progress"]:
            return HTTPStatus.OK, _json(self.progress()), JSON
        if method == "POST" and len(parts) == 2 and parts[0] == "api":
            body = _read_body(environ)
            return HTTPStatus.OK, _json(self.act(annotator, parts[1], body)), JSON
        raise RequestError(HTTPStatus.NOT_FOUND, "not found")


JSON = "application/json"


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _read_body(environ: dict[str, Any]) -> dict[str, Any]:
    """The request's body: a JSON object of at most MAX_BODY bytes, or a 400 saying why not."""
    data = environ["wsgi.input"].read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(data.decode("utf-8") or "{}")
    # invalid UTF-8, not JSON, a number of thousands of digits, nesting deeper than Python's stack
    except (ValueError, RecursionError) as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise RequestError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
    return body


def make_server(
    data: Path, stage: str, *, host: str, port: int, annotators: int, database: Path | None = None
) -> tuple[Any, dict[str, str]]:
    """(server, tokens by annotator): a bound waitress server, not yet serving (``run()``);
    ``server.app`` is the :class:`ReviewApp`, ``server.effective_port`` its port.
    ``database``: the store (default :func:`store_path`)."""
    import waitress

    database = Path(database or store_path(data, stage))
    store = AnnotationStore(database)
    try:
        names = [f"annotator-{i}" for i in range(1, annotators + 1)]
        tokens = store.issue_tokens(names)
    finally:
        store.close()
    app = ReviewApp(ReviewData.open(data, stage, database), database)
    # its queue-depth warnings under load would drown the printed tokens
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = waitress.create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=CONNECTIONS,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        channel_timeout=IDLE_SECONDS,
        max_request_body_size=MAX_BODY,
        ident="emu-review",
    )
    server.app = app
    return server, tokens
