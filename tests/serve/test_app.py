"""The server against a real uvicorn on 127.0.0.1: only the index's own files and videos, addressed by id (traversal
attempts and unknown ids are 404s), range requests (206), refusals of bad requests with a 4xx and a message, and
serving on after a bad request or a missing video."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from urllib.parse import urlsplit

import pytest

from egovlp.features.sources import read_frames
from egovlp.viz import attention_maps, attention_png


def get(url: str, headers: dict | None = None, method: str = "GET", data: bytes | None = None):
    """``(status, headers, body)``; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def raw(url: str, request: bytes) -> bytes:
    """Send ``request`` bytes as they are (no client-side normalisation of the path) and return the response."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_the_page_and_its_static_files(server):
    status, headers, body = get(server + "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'id="search-form"' in body
    status, headers, body = get(server + "/static/app.js")
    assert status == 200 and "javascript" in headers["content-type"] and b"/api/search" in body
    assert get(server + "/static/style.css")[0] == 200
    assert get(server + "/api/info")[2] and json.loads(get(server + "/api/info")[2])["attention"] is True


@pytest.mark.parametrize(
    "path",
    [
        "/static/../manifest.json", "/static/..%2fmanifest.json", "/static/%2e%2e%2fmanifest.json",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd", "/static/manifest.json", "/static/", "/manifest.json",
        "/index/manifest.json", "/thumbs/kitchen/000000.jpg", "/api/thumb/..%2fmanifest.json",
        "/api/thumb/0%2f..%2f..%2fmanifest.json", "/api/media/..%2f..%2fetc%2fpasswd", "/api/media/0/..%2f1",
        "//etc/passwd", "/api/media/%2Fetc%2Fpasswd",
    ],
)  # fmt: skip
def test_traversal_attempts_reach_no_file(server, index, path):
    response = raw(server, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    assert status in (404, 422), response[:300]
    assert b"root:" not in body and b'"settings"' not in body and b"\xff\xd8" not in body  # no passwd, manifest, JPEG
    assert "error" in json.loads(body)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/thumb/-1", 404, "no window -1 in this index"),
        ("/api/thumb/100000", 404, "no window 100000"),
        ("/api/thumb/abc", 422, "window"),
        ("/api/media/3", 404, "no video 3 in this index (it has 3)"),
        ("/api/media/-1", 404, "no video -1"),
        ("/api/media/2", 404, "is chunked: ask for /api/media/2/<chunk>"),
        ("/api/media/2/2", 404, "has no chunk 2"),
        ("/api/media/2/-1", 404, "has no chunk -1"),
        ("/api/media/0/0", 404, "has no chunk 0"),
        ("/api/attention/100000?q=cup", 404, "no window 100000"),
        ("/nothing/here", 404, "no such page"),
    ],
)
def test_unknown_ids_are_404_with_a_message(server, path, status, message):
    code, _, body = get(server + path)
    assert code == status and message in error_of(body)


def test_thumbnails_are_the_index_files(server, index):
    for window in (0, index.num_windows - 1):
        status, headers, body = get(f"{server}/api/thumb/{window}")
        assert status == 200 and headers["content-type"] == "image/jpeg"
        assert body == index.thumbnail_path(window).read_bytes()


def test_range_requests(server, library):
    data = library["kitchen"].read_bytes()
    url = server + "/api/media/0"
    status, headers, body = get(url)
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
    status, headers, body = get(url, {"Range": "bytes=10-99"})
    assert status == 206 and body == data[10:100] and headers["content-range"] == f"bytes 10-99/{len(data)}"
    status, headers, body = get(url, {"Range": "bytes=100-"})
    assert status == 206 and body == data[100:]
    status, headers, body = get(url, {"Range": "bytes=-64"})
    assert status == 206 and body == data[-64:]
    status, headers, _ = get(url, {"Range": f"bytes={len(data) + 10}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(data)}"
    assert get(url, {"Range": "bytes=abc"})[0] == 400
    chunk = (library["walk"] / "1.mp4").read_bytes()
    status, headers, body = get(server + "/api/media/2/1", {"Range": "bytes=0-15"})
    assert status == 206 and body == chunk[:16] and headers["content-range"] == f"bytes 0-15/{len(chunk)}"


def test_search_results_are_the_searchers(server, searcher, index):
    status, _, body = get(server + "/api/search?" + urllib.parse.urlencode({"q": "C cuts the onion", "k": 3}))
    assert status == 200
    results = json.loads(body)["results"]
    want = searcher.search("C cuts the onion", top_k=3)
    assert [(r["video"], r["start"], r["end"], r["rank"]) for r in results] == [
        (m.video, m.start, m.end, m.rank) for m in want
    ]
    for r, m in zip(results, want, strict=True):
        assert r["score"] == pytest.approx(m.score) and r["window"] == m.window_ids[0]
        assert r["thumb"] == f"/api/thumb/{m.window_ids[0]}" and r["attention"] == f"/api/attention/{m.window_ids[0]}"
        number = [v.id for v in index.videos].index(m.video)
        if (
            index.videos[number].kind == "chunked"
        ):  # chunked: the chunk holding the start, and the time of that chunk's first frame
            k = int(m.start // 2.0)
            assert r["media"] == f"/api/media/2/{k}" and r["media_offset"] == 2.0 * k and r["chunk_seconds"] == 2.0
        else:
            assert r["media"] == f"/api/media/{number}" and r["media_offset"] == 0.0 and r["chunk_seconds"] is None
    reranked = json.loads(get(server + "/api/search?q=washes+a+cup&k=2&rerank=4")[2])["results"]
    assert all(r["vtm"] is not None for r in reranked)


def test_attention_map_is_the_png_of_the_windows_frames(server, index, searcher):
    status, headers, body = get(server + "/api/attention/3?" + urllib.parse.urlencode({"q": "C opens the drawer"}))
    assert status == 200 and headers["content-type"] == "image/png"
    w = index.window(3)
    frames = read_frames(index.videos[w.video].ref, index.frame_times(3))
    maps = attention_maps(searcher.model, searcher.tokenizer, frames, "C opens the drawer")
    assert body == attention_png(maps, f'"C opens the drawer"  {index.videos[w.video].id} {w.start:.1f}-{w.end:.1f} s')
    assert get(server + "/api/attention/3?q=C+opens&layer=2")[0] == 200
    code, _, body = get(server + "/api/attention/3?q=C+opens&layer=0")
    assert code == 400 and "not a fused layer" in error_of(body)
    code, _, body = get(server + "/api/attention/3?q=C&layer=..%2f")
    assert code == 400 and "layer must be" in error_of(body)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/search?q=", 400, "empty query"),
        ("/api/search?q=%20%20", 400, "empty query"),
        ("/api/search?q=" + "a" * 201, 400, "at most 200"),
        ("/api/search?q=cup&k=0", 422, "k: "),
        ("/api/search?q=cup&k=51", 422, "k: "),
        ("/api/search?q=cup&k=ten", 422, "k: "),
        ("/api/search?q=cup&rerank=101", 400, "rerank is at most 100"),
        ("/api/search?q=cup&rerank=-1", 422, "rerank"),
        ("/api/attention/0", 400, "empty query"),
        ("/api/search?q=" + "a" * 3000, 414, "longer than 2048"),
    ],
)
def test_bad_requests_are_refused_and_the_server_goes_on(server, path, status, message):
    code, _, body = get(server + path)
    assert code == status and message in error_of(body)
    assert get(server + "/api/search?q=cup&k=1")[0] == 200


def test_methods_bodies_and_malformed_http_are_refused(server):
    code, _, body = get(server + "/api/search?q=cup", method="POST", data=b"{}")
    assert code == 405 and "only answers GET" in error_of(body)
    code, _, body = get(server + "/api/search?q=cup", method="GET", data=b"x" * 10)
    assert code == 413 and "body" in error_of(body)
    assert raw(server, b"NONSENSE\r\n\r\n").split()[1].startswith(b"4")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw(server, huge).split()[1] in (b"400", b"431")  # the server's limit (or h11's, whichever parses)
    assert get(server + "/")[0] == 200


def test_a_missing_video_is_a_404_and_the_server_goes_on(server, library, index):
    path = library["garage"]
    hidden = path.with_name(".garage.mp4.hidden")
    number, video = next((i, v) for i, v in enumerate(index.videos) if v.source == str(path))
    os.replace(path, hidden)
    try:
        code, _, body = get(f"{server}/api/media/{number}", {"Range": "bytes=0-9"})
        assert code == 404 and f"video {number} ({video.id}) is not there: {path}" in error_of(body)
        code, _, body = get(f"{server}/api/attention/{video.first_window}?q=cup")
        assert code == 404 and str(path) in error_of(body)
        assert get(server + "/api/media/0", {"Range": "bytes=0-9"})[0] == 206
    finally:
        os.replace(hidden, path)
    assert get(f"{server}/api/media/{number}", {"Range": "bytes=0-9"})[0] == 206


def test_concurrent_requests_are_all_answered(server):
    """Searches and attention maps from several threads at once (the model and matplotlib run one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [f"/api/attention/{i % 4}?q=C+washes+a+cup" for i in range(6)] + ["/api/search?q=cup&k=2"] * 6
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda p: get(server + p), paths))
    assert [a[0] for a in answers] == [200] * len(paths)
    pngs = [a[2] for a in answers[:6]]
    assert pngs[0] == pngs[4] and pngs[1] == pngs[5] and pngs[0] != pngs[1]  # same window, same map
