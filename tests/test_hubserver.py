"""Tests of the local Hub stand-in, driven by the real ``hf_hub_download`` and by urllib."""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hubserver import HubServer, use_endpoint

REPO = "timm/vit_small_patch8_224.dino"
WEIGHTS = bytes(range(256)) * 40  # 10 KiB, every byte value


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server
    assert not server.errors


@pytest.fixture
def cache(hub: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    return use_endpoint(monkeypatch, hub, tmp_path / "hf-home")


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None):
    """Open ``url`` with urllib; the caller reads and closes the response."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    return urllib.request.urlopen(request, timeout=5)


def test_download_returns_registered_bytes(hub: HubServer, cache: Path) -> None:
    commit = hub.add_repo_file(REPO, "sub/dir/model.safetensors", WEIGHTS)

    path = Path(hf_hub_download(REPO, "sub/dir/model.safetensors"))

    assert path.read_bytes() == WEIGHTS
    assert path.relative_to(cache).parts == (
        "models--timm--vit_small_patch8_224.dino",
        "snapshots",
        commit,
        "sub",
        "dir",
        "model.safetensors",
    )
    assert hub.count("HEAD") == 1
    assert hub.count("GET", contains="/resolve/main/sub/dir/model.safetensors") == 1


def test_second_download_is_a_cache_hit(hub: HubServer, cache: Path) -> None:
    hub.add_repo_file(REPO, "model.safetensors", WEIGHTS)
    first = hf_hub_download(REPO, "model.safetensors")
    hub.clear_requests()

    second = hf_hub_download(REPO, "model.safetensors")

    assert second == first
    assert hub.count("GET") == 0
    assert hub.count("HEAD") == 1  # a branch is re-resolved, its content is not fetched again


def test_pinned_revision_keeps_old_content_after_main_moved(hub: HubServer, cache: Path) -> None:
    old = hub.add_repo_file(REPO, "model.safetensors", b"old weights")
    new = hub.add_repo_file(REPO, "model.safetensors", b"new weights")
    assert old != new

    pinned = Path(hf_hub_download(REPO, "model.safetensors", revision=old))
    latest = Path(hf_hub_download(REPO, "model.safetensors"))

    assert pinned.read_bytes() == b"old weights"
    assert latest.read_bytes() == b"new weights"
    hub.clear_requests()
    hf_hub_download(REPO, "model.safetensors", revision=old)
    assert hub.requests == []  # a cached commit sha needs no request at all


def test_commits_are_deterministic_and_can_be_given() -> None:
    def build() -> list[str]:
        server = HubServer()
        return [
            server.add_repo_file(REPO, "a.bin", b"a"),
            server.add_repo_file(REPO, "b.bin", b"b"),
            server.add_repo_file(REPO, "a.bin", b"a2", branch="dev"),
        ]

    first, second = build(), build()
    assert first == second
    assert len(set(first)) == 3
    server = HubServer()
    given = "AB" * 20
    assert server.add_repo_file(REPO, "a.bin", b"a", commit=given) == given.lower()
    assert server.add_repo_file(REPO, "b.bin", b"b", commit=given) == given.lower()
    with pytest.raises(ValueError):
        server.add_repo_file(REPO, "a.bin", b"a", commit="abc123")
    for bad_repo in ("no-namespace", "a/b/c", "files/model"):
        with pytest.raises(ValueError):
            server.add_repo_file(bad_repo, "a.bin", b"a")


def test_resolve_headers_match_the_hub(hub: HubServer) -> None:
    commit = hub.add_repo_file(REPO, "model.safetensors", WEIGHTS)
    hub.add_repo_file(REPO, "config.json", b"{}", commit=commit)  # same commit, two files
    etag = f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'

    for revision in ("main", commit):
        url = f"{hub.endpoint}/{REPO}/resolve/{revision}/model.safetensors"
        with fetch(url, method="HEAD") as response:
            assert response.status == 200
            assert response.read() == b""
            headers = response.headers
        assert headers["X-Repo-Commit"] == commit
        assert headers["ETag"] == headers["X-Linked-Etag"] == etag
        assert headers["Content-Length"] == headers["X-Linked-Size"] == str(len(WEIGHTS))
        assert headers["Accept-Ranges"] == "bytes"

    url = f"{hub.endpoint}/{REPO}/resolve/main/model.safetensors"
    with fetch(url, headers={"Range": "bytes=10000-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10000-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
        assert response.read() == WEIGHTS[10000:]


def test_quoted_branch_name_with_slashes(hub: HubServer, cache: Path) -> None:
    commit = hub.add_repo_file(REPO, "model.safetensors", b"from a pr", branch="refs/pr/1")

    path = Path(hf_hub_download(REPO, "model.safetensors", revision="refs/pr/1"))

    assert path.read_bytes() == b"from a pr"
    assert path.parent.name == commit
    (head,) = [record for record in hub.requests if record.method == "HEAD"]
    assert head.path == f"/{REPO}/resolve/refs/pr/1/model.safetensors"  # logged decoded


def test_unknown_file_raises_entry_not_found(hub: HubServer, cache: Path) -> None:
    commit = hub.add_repo_file(REPO, "model.safetensors", WEIGHTS)

    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.safetensors")

    (head,) = hub.requests
    assert head.status == 404
    # The commit sent with the error lets huggingface_hub cache the file's absence.
    assert (cache / "models--timm--vit_small_patch8_224.dino/.no_exist" / commit).is_dir()


def test_unknown_repo_and_revision_raise_their_errors(hub: HubServer, cache: Path) -> None:
    hub.add_repo_file(REPO, "model.safetensors", WEIGHTS)

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("timm/missing", "model.safetensors")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "model.safetensors", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "model.safetensors", revision="0" * 40)

    codes = []
    for url in (
        f"{hub.endpoint}/timm/missing/resolve/main/model.safetensors",
        f"{hub.endpoint}/{REPO}/resolve/dev/model.safetensors",
        f"{hub.endpoint}/{REPO}/resolve/main/missing.bin",
        f"{hub.endpoint}/api/models/{REPO}",
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            fetch(url)
        assert caught.value.code == 404
        codes.append(caught.value.headers.get("X-Error-Code"))
        caught.value.close()
    assert codes == ["RepoNotFound", "RevisionNotFound", "EntryNotFound", None]


def test_plain_url_range_returns_the_tail(hub: HubServer) -> None:
    hub.add_url_file("weights/model.pth", WEIGHTS)
    url = hub.url("weights/model.pth")

    with fetch(url, method="HEAD") as response:
        assert response.headers["Content-Length"] == str(len(WEIGHTS))
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    with fetch(url, headers={"Range": "bytes=4000-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 4000-10239/{len(WEIGHTS)}"
        assert response.headers["Content-Length"] == str(len(WEIGHTS) - 4000)
        assert response.read() == WEIGHTS[4000:]
    with fetch(url, headers={"Range": "bytes=-16"}) as response:
        assert response.read() == WEIGHTS[-16:]
    with fetch(url) as response:
        assert response.status == 200
        assert response.read() == WEIGHTS

    assert [record.path for record in hub.requests] == ["/files/weights/model.pth"] * 4
    assert hub.requests[1].headers["range"] == "bytes=4000-"


@pytest.mark.parametrize("bad", ["bytes=10240-", "bytes=5-2", "bytes=0-1,5-6", "lines=1-"])
def test_plain_url_bad_range_is_416(hub: HubServer, bad: str) -> None:
    hub.add_url_file("model.pth", WEIGHTS)

    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(hub.url("model.pth"), headers={"Range": bad})

    assert caught.value.code == 416
    assert caught.value.headers["Content-Range"] == f"bytes */{len(WEIGHTS)}"
    caught.value.close()


def test_unknown_plain_file_is_404(hub: HubServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(hub.url("nothing.pth"))
    assert caught.value.code == 404
    caught.value.close()


def test_truncate_next_cuts_one_get_short(hub: HubServer) -> None:
    hub.add_url_file("model.pth", WEIGHTS)
    hub.truncate_next("model.pth", 1000)

    with fetch(hub.url("model.pth"), method="HEAD") as response:  # HEAD is not affected
        assert response.headers["Content-Length"] == str(len(WEIGHTS))
    with fetch(hub.url("model.pth")) as response:
        assert response.headers["Content-Length"] == str(len(WEIGHTS))
        with pytest.raises(http.client.IncompleteRead) as caught:
            response.read()
    assert caught.value.partial == WEIGHTS[:1000]

    with fetch(hub.url("model.pth")) as response:  # the fault was used up
        assert response.read() == WEIGHTS


def test_hf_hub_download_recovers_from_a_dropped_transfer(hub: HubServer, cache: Path) -> None:
    hub.add_repo_file(REPO, "model.safetensors", WEIGHTS)
    hub.truncate_next("/model.safetensors", 1000)

    path = Path(hf_hub_download(REPO, "model.safetensors"))

    assert path.read_bytes() == WEIGHTS
    assert hub.count("GET") == 2  # the cut transfer, then the retry (after a 1 s client back-off)


def test_request_log(hub: HubServer) -> None:
    hub.add_url_file("a b/model.pth", b"x")

    with fetch(hub.url("a b/model.pth") + "?download=1", headers={"X-Test": "yes"}) as response:
        response.read()

    (record,) = hub.requests
    assert (record.method, record.path, record.status) == ("GET", "/files/a b/model.pth", 200)
    assert record.headers["x-test"] == "yes"
    assert hub.count() == 1
    assert hub.count(method="get", contains="a b/") == 1
    assert hub.count(method="HEAD") == 0
    assert hub.count(contains="other") == 0

    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(hub.url("a b/model.pth"), method="POST")
    assert caught.value.code == 405
    caught.value.close()
    assert hub.requests[-1].method == "POST"
    assert hub.requests[-1].status == 405

    hub.clear_requests()
    assert hub.requests == []


def test_server_is_quiet(hub: HubServer, capfd: pytest.CaptureFixture[str]) -> None:
    hub.add_url_file("model.pth", WEIGHTS)
    hub.truncate_next("model.pth", 10)
    with fetch(hub.url("model.pth")) as response, pytest.raises(http.client.IncompleteRead):
        response.read()
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(hub.url("missing"))
    caught.value.close()

    captured = capfd.readouterr()
    assert captured.err == ""
    assert captured.out == ""


def test_endpoint_requires_a_running_server() -> None:
    server = HubServer()
    with pytest.raises(RuntimeError):
        _ = server.endpoint
    with server:
        assert server.endpoint.startswith("http://127.0.0.1:")
    server.close()  # closing twice is harmless
