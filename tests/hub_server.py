"""A small Hugging Face Hub on 127.0.0.1 for the push tests: the endpoints huggingface_hub's
``create_repo``, ``create_branch`` and ``create_commit`` call (read from its source), with
tokens, repositories of each type, branches and files kept in memory; and the ones
``snapshot_download`` and ``hf_hub_download`` read with (``revision`` info, ``tree`` listing,
``resolve`` by branch or commit; a private repo answers readers without a token 401).
A commit's id is the hash of the files it holds, so every branch state has one.

Every file is answered "regular" at preupload, so its bytes arrive base64-encoded inside the
commit, where the test can compare them with the originals."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

WRITE_TOKEN = "hf_write_token"
READ_TOKEN = "hf_read_token"


@dataclass
class Repository:
    repo_type: str
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict] = field(default_factory=list)
    snapshots: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> files

    def files_at(self, revision: str) -> dict[str, bytes] | None:
        """The files of a branch or of a commit."""
        return self.branches.get(revision, self.snapshots.get(revision))

    def commit(self, branch: str, added: dict[str, bytes]) -> str:
        files = self.branches[branch]
        files.update(added)
        oid = commit_id(files)
        self.snapshots[oid] = dict(files)
        return oid


def commit_id(files: dict[str, bytes]) -> str:
    listing = json.dumps({name: hashlib.sha256(v).hexdigest() for name, v in sorted(files.items())})
    return hashlib.sha1(listing.encode()).hexdigest()


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repository] = {}
        self.requests: list[tuple[str, str]] = []
        self.drop_next = 0  # close this many connections without answering (network failures)
        self.stalling = False  # accept every POST and never answer it, until the hub closes
        self.closed = threading.Event()
        self.lock = threading.Lock()
        handler = type("HubHandler", (HubHandler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo: str, repo_type: str = "model", branch: str = "main") -> dict[str, bytes]:
        return self.repos[(repo_type, repo)].branches[branch]


class HubHandler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *_) -> None:
        return

    def _reply(self, status: int, payload: dict | list, code: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("X-Error-Message", payload.get("error", ""))
        if code:
            self.send_header("X-Error-Code", code)
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self._resolve(with_body=False)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path.startswith("/api/"):
            with self.hub.lock:
                self.hub.requests.append(("GET", self.path))
            return self._api_get(path)
        self._resolve(with_body=True)

    def _readable(self, repo: Repository | None) -> bool:
        """Public repos to anyone; private ones to a known token (as the Hub hides them: 401)."""
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return repo is not None and (not repo.private or token in (WRITE_TOKEN, READ_TOKEN))

    def _api_get(self, path: str) -> None:
        """``repo_info`` (at a revision or the main branch), and the file listing
        ``snapshot_download`` and ``datasets`` fetch (all of it, or one folder's entries)."""
        if re.fullmatch(r"/api/(model|dataset)s/[^/]+/[^/]+", path):  # info at the main branch
            path += "/revision/main"
        match = re.fullmatch(
            r"/api/(model|dataset)s/([^/]+/[^/]+)/(revision|tree)/([^/]+)(?:/(.+))?", path
        )
        repo = match and self.hub.repos.get((match[1], match[2]))
        if not match or not self._readable(repo):
            return self._reply(401, {"error": "Repository not found"}, code="RepoNotFound")
        files = repo.files_at(unquote(match[4]))
        if files is None:
            return self._reply(404, {"error": "Invalid rev id"}, code="RevisionNotFound")
        if match[3] == "revision":
            siblings = [{"rfilename": name} for name in sorted(files)]
            return self._reply(200, {"id": match[2], "sha": commit_id(files),
                                     "private": repo.private, "siblings": siblings})  # fmt: skip
        recursive = "recursive=true" in self.path.lower()
        prefix = f"{unquote(match[5])}/" if match[5] else ""
        under = {name: data for name, data in files.items() if name.startswith(prefix)}
        if prefix and not under:
            return self._reply(404, {"error": "Entry not found"}, code="EntryNotFound")
        listing, folders = [], set()
        for name, data in sorted(under.items()):
            rest = name[len(prefix) :]
            if "/" in rest and not recursive:
                folders.add(prefix + rest.split("/", 1)[0])
                continue
            oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            listing.append({"type": "file", "path": name, "size": len(data), "oid": oid})
        listing += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        return self._reply(200, listing)

    def _resolve(self, with_body: bool) -> None:
        """A file of a branch or commit, with the headers ``hf_hub_download`` reads (commit, ETag,
        size)."""
        hub = self.hub
        with hub.lock:
            hub.requests.append((self.command, self.path))
        match = re.fullmatch(r"/(?:(datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)",
                             self.path.split("?")[0])  # fmt: skip
        repo = match and hub.repos.get(("dataset" if match[1] else "model", match[2]))
        files = repo.files_at(unquote(match[3])) if self._readable(repo) else None
        data = files.get(unquote(match[4])) if files is not None else None
        if data is None:
            error = "EntryNotFound" if files is not None else "RepoNotFound"
            self.send_response(404 if files is not None else 401)
            self.send_header("X-Error-Code", error)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit_id(files))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802
        hub = self.hub
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with hub.lock:
            hub.requests.append(("POST", self.path))
            if hub.drop_next:
                hub.drop_next -= 1
                self.close_connection = True
                self.connection.close()
                return
            stalling = hub.stalling
        if stalling:
            hub.closed.wait()
            self.close_connection = True
            return
        token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if token not in (WRITE_TOKEN, READ_TOKEN):
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        path = self.path.split("?")[0]
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        if token != WRITE_TOKEN:
            return self._reply(403, {"error": "You don't have the rights to write here"})
        if path == "/api/repos/create":
            request = json.loads(body)
            name = f"{request['organization']}/{request['name']}"
            key = (request.get("type") or "model", name)
            with hub.lock:
                if key in hub.repos:  # the Hub names the repo: create_repo(exist_ok) reads it
                    return self._reply(409, {"error": "You already created this repo",
                                             "url": f"{hub.endpoint}/{name}"})  # fmt: skip
                private = request.get("visibility") == "private" or bool(request.get("private"))
                hub.repos[key] = Repository(key[0], private)
            return self._reply(200, {"url": f"{hub.endpoint}/{name}", "name": name})
        match = re.fullmatch(r"/api/(model|dataset|space)s/([^/]+/[^/]+)/(\w+)/(.+)", path)
        if not match:
            return self._reply(404, {"error": f"no route {path}"})
        repo_type, name, action, revision = match.groups()
        repo = hub.repos.get((repo_type, name))
        if repo is None:
            return self._reply(404, {"error": "Repository not found"})
        if action == "branch":
            if revision in repo.branches:
                return self._reply(409, {"error": "Branch already exists"})
            repo.branches[revision] = dict(repo.branches["main"])
            return self._reply(200, {})
        if revision not in repo.branches:
            return self._reply(404, {"error": f"Revision {revision} not found"})
        if action == "preupload":
            files = json.loads(body)["files"]
            answer = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                for f in files
            ]
            return self._reply(200, {"files": answer})
        if action == "commit":
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            added = {}
            for line in lines:
                if line["key"] == "file":
                    value = line["value"]
                    added[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] != "header":
                    return self._reply(400, {"error": f"unsupported operation {line['key']}"})
            with hub.lock:
                oid = repo.commit(revision, added)
                repo.commits.append({"summary": header["summary"], "files": sorted(added),
                                     "revision": revision})  # fmt: skip
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            return self._reply(200, {"commitUrl": f"{hub.endpoint}/{prefix}{name}/commit/{oid}",
                                     "commitOid": oid})  # fmt: skip
        return self._reply(404, {"error": f"no action {action}"})
