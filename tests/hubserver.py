"""A local stand-in for the Hugging Face Hub, for tests that must not touch the network.

`HubServer` is a stdlib HTTP server (``ThreadingHTTPServer`` in a daemon thread, bound to
``127.0.0.1`` on an ephemeral port) that speaks the subset of the Hub protocol that
``huggingface_hub.hf_hub_download`` uses, plus plain file downloads.

Hub file resolution (model repos only)
    ``HEAD`` and ``GET /{namespace}/{name}/resolve/{revision}/{filename}``. The revision is
    a branch name or a full 40-hex commit sha and arrives URL-quoted (``quote(revision,
    safe="")``, so a branch such as ``refs/pr/1`` comes as ``refs%2Fpr%2F1``); the filename
    may contain slashes. Every file is answered the way the Hub answers an LFS file, except
    that it is served directly with 200 instead of a 302 to a CDN:

    - ``X-Repo-Commit``: the commit the revision resolved to;
    - ``ETag`` and ``X-Linked-Etag``: the quoted sha256 hex of the content;
    - ``X-Linked-Size`` and ``Content-Length``: the size in bytes;
    - ``Accept-Ranges: bytes``; a GET with one ``Range`` (``bytes=N-``, ``bytes=N-M`` or
      ``bytes=-N``) gets 206 with ``Content-Range``, which is how ``hf_hub_download``
      resumes a dropped transfer.

    Errors are 404s with the ``X-Error-Code`` values that ``huggingface_hub`` maps to its
    exceptions: ``RepoNotFound`` (``RepositoryNotFoundError``; note that the Hub's code is
    ``RepoNotFound``, not ``RepositoryNotFound``), ``RevisionNotFound``
    (``RevisionNotFoundError``) and ``EntryNotFound`` (``RemoteEntryNotFoundError``, a
    subclass of ``EntryNotFoundError``). ``EntryNotFound`` carries ``X-Repo-Commit``, as on
    the Hub, so that the client can cache the file's absence. Error bodies are JSON
    ``{"error": ...}``.

    That is all ``hf_hub_download`` needs (checked against huggingface_hub 2.4.0): one HEAD
    for the metadata (skipped when the revision is a commit sha already in the cache), then
    one GET, plus ranged GETs to resume a transfer that broke off. It never calls
    ``/api/...`` for this. The one ``/api`` request the library may make is the best-effort
    ``GET /api/agent-harnesses`` of its user-agent telemetry; it gets a plain 404 here, which
    the library ignores, and `use_endpoint` turns that telemetry off anyway.

Plain files
    ``HEAD`` and ``GET /files/{path}`` with ``Content-Length``, ``ETag`` and
    ``Accept-Ranges``. A satisfiable single range gets 206 with ``Content-Range``; any other
    ``Range`` (malformed, several ranges, or starting past the end) gets 416 with
    ``Content-Range: bytes */{size}``. The same range rules apply to Hub files.

Other methods get 405. Every response closes its connection (no keep-alive), so no
handler thread outlives the request it serves. Every request is logged in
`HubServer.requests` before its response is sent; nothing is written to stderr.

Pointing ``huggingface_hub`` at the server
    ``huggingface_hub.constants`` reads ``HF_ENDPOINT`` once, at import time, into
    ``ENDPOINT`` and ``HUGGINGFACE_CO_URL_TEMPLATE`` (``ENDPOINT +
    "/{repo_id}/resolve/{revision}/{filename}"``), and ``hf_hub_url`` formats that template
    at call time. Setting the environment variable inside a test therefore has no effect
    once anything (timm, an earlier test) has imported the library. Two ways work:

    - pass ``endpoint=hub.endpoint`` to ``hf_hub_download`` (fine for direct calls, but not
      for code that calls it without that argument, such as timm);
    - patch both constants, which is what `use_endpoint` does, together with the cache
      location, offline mode, implicit tokens, telemetry and Xet, whose constants are
      likewise frozen at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    import pytest
    from typing_extensions import Self

__all__ = ["HubServer", "RequestRecord", "use_endpoint"]

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
_BYTE_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_FILES_PREFIX = "/files/"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it.

    ``path`` is the URL path, percent-decoded and without the query string; ``headers``
    maps lower-cased header names to values; ``status`` is the status code answered.
    """

    method: str
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class _Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class _Blob:
    data: bytes
    etag: str  # quoted sha256 hex of data

    @classmethod
    def of(cls, data: bytes) -> _Blob:
        data = bytes(data)
        return cls(data, f'"{hashlib.sha256(data).hexdigest()}"')


@dataclass
class _Repo:
    commits: dict[str, dict[str, _Blob]] = field(default_factory=dict)  # sha -> tree
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha


class HubServer:
    """Serve Hub repository files and plain files from memory on ``127.0.0.1``.

    Use it as a context manager (``with HubServer() as hub: ...``) or call `start` and
    `close`. Files can be registered before or after starting; all methods are
    thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        self._files: dict[str, _Blob] = {}
        self._truncations: list[tuple[str, int]] = []
        self._restarts: list[str] = []
        self._requests: list[RequestRecord] = []
        self._errors: list[BaseException] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Self:
        """Bind an ephemeral port and serve in a daemon thread; return ``self``."""
        if self._server is not None:
            raise RuntimeError("HubServer is already running")
        server = _Server(self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"HubServer:{server.server_address[1]}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def close(self) -> None:
        """Stop serving and release the port. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self._server is None:
            raise RuntimeError("HubServer is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        """Absolute URL of the plain file registered under ``path``."""
        return f"{self.endpoint}{_FILES_PREFIX}{quote(path.lstrip('/'))}"

    # -- content ---------------------------------------------------------------------------

    def add_repo_file(
        self,
        repo_id: str,
        filename: str,
        data: bytes,
        commit: str | None = None,
        branch: str = "main",
    ) -> str:
        """Put ``filename`` with ``data`` in a commit of ``repo_id``; point ``branch`` at it.

        Without ``commit``, a new commit is made on top of the branch (its files plus this
        one), with a sha derived deterministically from the repo, the parent commit, the
        filename and the content. With a ``commit`` that is new to the repo, the same
        happens under that sha; with one that exists, the file is added to (or replaced
        in) that commit, which lets several files share one commit. Earlier commits keep
        their content, so a test can pin an old revision after the branch moved on.
        Returns the commit sha (40 lower-case hex digits).
        """
        namespace, _, name = repo_id.partition("/")
        if not namespace or not name or "/" in name:
            raise ValueError(f"repo_id must look like 'namespace/name', got {repo_id!r}")
        if f"/{namespace}/" == _FILES_PREFIX:
            raise ValueError(f"the namespace {namespace!r} is reserved for plain files")
        if not filename or filename.startswith("/"):
            raise ValueError(f"filename must be a relative path, got {filename!r}")
        blob = _Blob.of(data)
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            parent = repo.branches.get(branch)
            if commit is None:
                seed = f"{repo_id}\0{parent or ''}\0{filename}\0{blob.etag}"
                commit = hashlib.sha1(seed.encode()).hexdigest()
            else:
                commit = commit.lower()
                if not _COMMIT_SHA.fullmatch(commit):
                    raise ValueError(f"commit must be 40 hex digits, got {commit!r}")
            if commit not in repo.commits:
                repo.commits[commit] = dict(repo.commits[parent]) if parent else {}
            repo.commits[commit][filename] = blob
            repo.branches[branch] = commit
        return commit

    def add_url_file(self, path: str, data: bytes) -> None:
        """Serve ``data`` at ``/files/{path}`` (see `url`)."""
        with self._lock:
            self._files[path.lstrip("/")] = _Blob.of(data)

    # -- fault injection -------------------------------------------------------------------

    def truncate_next(self, path_suffix: str, nbytes: int) -> None:
        """Cut short the next GET whose decoded path ends with ``path_suffix``.

        That response keeps its normal status and headers (``Content-Length`` included)
        but sends at most ``nbytes`` bytes of body before the connection is closed, like a
        dropped transfer. Each call arms one GET; HEAD requests are never affected.
        """
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        with self._lock:
            self._truncations.append((path_suffix, nbytes))

    def restart_next_range(self, path_suffix: str) -> None:
        """Answer the next ranged GET whose path ends with ``path_suffix`` with 206 and the whole
        body from byte 0 (``Content-Range: bytes 0-...``), like a server that lost the resume."""
        with self._lock:
            self._restarts.append(path_suffix)

    def _take_restart(self, path: str) -> bool:
        with self._lock:
            for index, suffix in enumerate(self._restarts):
                if path.endswith(suffix):
                    del self._restarts[index]
                    return True
        return False

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the logged requests."""
        with self._lock:
            self._requests.clear()

    def count(self, method: str | None = None, contains: str | None = None) -> int:
        """Number of logged requests with this method and a path containing ``contains``."""
        return sum(
            1
            for record in self.requests
            if (method is None or record.method == method.upper()) and (contains is None or contains in record.path)
        )

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions raised while handling requests (client hang-ups excluded)."""
        with self._lock:
            return list(self._errors)

    # -- request handling (called from handler threads) ------------------------------------

    def _reply(self, raw_path: str, range_header: str | None) -> _Reply:
        """Build the response to a HEAD/GET of the still percent-encoded ``raw_path``."""
        if raw_path.startswith(_FILES_PREFIX):
            with self._lock:
                blob = self._files.get(unquote(raw_path[len(_FILES_PREFIX) :]))
            if blob is None:
                return _error(HTTPStatus.NOT_FOUND, "File not found")
            return _content_reply(blob, range_header, {})

        parts = raw_path.split("/")
        if len(parts) < 6 or parts[0] or parts[3] != "resolve":
            return _error(HTTPStatus.NOT_FOUND, "Not found")
        repo_id = f"{unquote(parts[1])}/{unquote(parts[2])}"
        revision = unquote(parts[4])
        filename = unquote("/".join(parts[5:]))
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return _error(HTTPStatus.NOT_FOUND, "Repository not found", "RepoNotFound")
            commit = repo.branches.get(revision)
            if commit is None and revision.lower() in repo.commits:
                commit = revision.lower()
            if commit is None:
                return _error(HTTPStatus.NOT_FOUND, "Invalid rev id", "RevisionNotFound")
            blob = repo.commits[commit].get(filename)
        if blob is None:
            return _error(
                HTTPStatus.NOT_FOUND,
                "Entry not found",
                "EntryNotFound",
                {"X-Repo-Commit": commit},
            )
        hub_headers = {
            "X-Repo-Commit": commit,
            "X-Linked-Etag": blob.etag,
            "X-Linked-Size": str(len(blob.data)),
        }
        return _content_reply(blob, range_header, hub_headers)

    def _take_truncation(self, path: str) -> int | None:
        """Consume the first armed truncation matching ``path``; return its byte budget."""
        with self._lock:
            for index, (suffix, nbytes) in enumerate(self._truncations):
                if path.endswith(suffix):
                    del self._truncations[index]
                    return nbytes
        return None

    def _log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _log_error(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        """Keep stderr clean: ignore client hang-ups, record anything else."""
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):
            self.hub._log_error(error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _refuse(self) -> None:
        reply = _error(HTTPStatus.METHOD_NOT_ALLOWED, "Only GET and HEAD are served")
        reply.headers["Allow"] = "GET, HEAD"
        self._serve(reply)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _refuse

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default per-request logging to stderr."""

    def _serve(self, reply: _Reply | None = None) -> None:
        """Log the request, then send ``reply`` (by default the content at the path)."""
        hub = self.server.hub
        raw_path = urlsplit(self.path).path
        path = unquote(raw_path)
        if reply is None:
            range_header = self.headers.get("Range")
            if range_header and self.command == "GET" and hub._take_restart(path):
                range_header = "bytes=0-"
            reply = hub._reply(raw_path, range_header)
        send_body = self.command != "HEAD"
        budget = hub._take_truncation(path) if self.command == "GET" else None
        headers = {name.lower(): value for name, value in self.headers.items()}
        hub._log(RequestRecord(self.command, path, headers, int(reply.status)))

        self.close_connection = True
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            self.wfile.write(reply.body if budget is None else reply.body[:budget])


def _content_reply(blob: _Blob, range_header: str | None, extra: dict[str, str]) -> _Reply:
    """200 with all of ``blob``, 206 with the requested range, or 416."""
    data, size = blob.data, len(blob.data)
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": blob.etag,
        **extra,
    }
    if range_header is None:
        return _Reply(HTTPStatus.OK, {**headers, "Content-Length": str(size)}, data)
    span = _parse_range(range_header, size)
    if span is None:
        headers.update({"Content-Range": f"bytes */{size}", "Content-Length": "0"})
        return _Reply(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers)
    first, last = span
    body = data[first : last + 1]
    headers.update({"Content-Range": f"bytes {first}-{last}/{size}", "Content-Length": str(len(body))})
    return _Reply(HTTPStatus.PARTIAL_CONTENT, headers, body)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Inclusive ``(first, last)`` of a single byte range, or None if unusable."""
    match = _BYTE_RANGE.fullmatch(header)
    if match is None or size == 0:
        return None
    first, last = match.groups()
    if not first:  # suffix range: the last N bytes
        if not last or int(last) == 0:
            return None
        return max(size - int(last), 0), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or (last and int(last) < start):
        return None
    return start, end


def _error(
    status: int,
    message: str,
    code: str | None = None,
    extra: dict[str, str] | None = None,
) -> _Reply:
    body = json.dumps({"error": message}).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "X-Error-Message": message,
        **(extra or {}),
    }
    if code is not None:
        headers["X-Error-Code"] = code
    return _Reply(status, headers, body)


def use_endpoint(monkeypatch: pytest.MonkeyPatch, hub: HubServer, home: str | os.PathLike[str]) -> Path:
    """Point ``huggingface_hub`` at ``hub`` for one test; return the hub cache directory.

    Sets the environment (for code that reads it later, e.g. subprocesses) and patches
    the ``huggingface_hub.constants`` values that were frozen at import time:

    - ``ENDPOINT`` and ``HUGGINGFACE_CO_URL_TEMPLATE`` -> ``hub.endpoint``;
    - ``HF_HOME`` -> ``home`` and ``HF_HUB_CACHE`` -> ``home/hub``, so nothing leaks into
      the user's cache and every test starts cold;
    - ``HF_HUB_OFFLINE`` off, ``HF_HUB_DISABLE_IMPLICIT_TOKEN`` on (no stored token is
      sent), telemetry off (no ``/api/agent-harnesses`` request), Xet off.

    ``monkeypatch`` undoes all of it at the end of the test.
    """
    from huggingface_hub import constants

    home = Path(home)
    cache = home / "hub"
    env = {
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)

    patches: dict[str, object] = {
        "ENDPOINT": hub.endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
    }
    for name, value in patches.items():
        if hasattr(constants, name):  # some names only exist in newer releases
            monkeypatch.setattr(constants, name, value)
    return cache
