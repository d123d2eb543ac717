"""The local search page of an index: a FastAPI app over one :class:`~egovlp.search.VideoIndex`.

Routes (every one GET/HEAD; everything a request names is an integer id or a fixed name, checked against the index
before any file is touched, so no request path reaches the file system):

    /                          the page (static/index.html)
    /static/{name}             app.js, style.css: a fixed list, read once from the package
    /api/info                  the index and what the model can do (attention maps, re-ranking)
    /api/search?q=&k=&rerank=  ranked moments, each with its thumbnail, media and attention URLs
    /api/thumb/{window}        a window's JPEG thumbnail (from the index folder)
    /api/media/{video}         a file video, with HTTP range requests (206), for the <video> player
    /api/media/{video}/{chunk} chunk k of a chunked Ego4D video (the page seeks to start - k * chunk_seconds)
    /api/attention/{window}?q=&layer=   the cross-attention PNG of the query on the window's frames

Refusals are JSON ``{"error": message}`` with a 4xx status: unknown ids and names 404, bad parameters 400/422,
other methods 405, request bodies 413, overlong URLs 414, overlong headers 431. A missing or unreadable video is a
404 for that request only; the server keeps serving.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from egovlp.errors import ConfigError, DataError
from egovlp.search import Searcher, VideoIndex

log = logging.getLogger(__name__)

__all__ = ["Limits", "create_app"]

STATIC = {"app.js": "text/javascript", "style.css": "text/css", "index.html": "text/html"}
_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Limits:
    """What a request may ask for."""

    max_url: int = 2048  # bytes of path + query string
    max_headers: int = 16384  # bytes of all request headers
    max_query: int = 200  # characters of a search text
    max_top_k: int = 50
    max_rerank: int = 100
    attention_cache: int = 32  # attention PNGs kept (window, text, layer)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _State:
    """The index, the searcher and a lock: one model pass at a time (recording attention changes module state)."""

    def __init__(self, index: VideoIndex, searcher: Searcher, limits: Limits) -> None:
        self.index, self.searcher, self.limits = index, searcher, limits
        self.lock = threading.Lock()
        self.video_number = {v.id: i for i, v in enumerate(index.videos)}
        self.static = {name: (resources.files("egovlp.serve") / "static" / name).read_bytes() for name in STATIC}
        self.pngs: OrderedDict[tuple[int, str, str], bytes] = OrderedDict()
        self.root = index.root.resolve()
        model = searcher.model
        self.attention = bool(getattr(getattr(model, "cfg", None), "has_fusion", False))

    def window(self, window: int) -> int:
        if not 0 <= window < self.index.num_windows:
            raise _Refused(404, f"no window {window} in this index (it has {self.index.num_windows})")
        return window

    def video(self, video: int):
        if not 0 <= video < len(self.index.videos):
            raise _Refused(404, f"no video {video} in this index (it has {len(self.index.videos)})")
        return self.index.videos[video]

    def text(self, q: str) -> str:
        q = q.strip()
        if not q:
            raise _Refused(400, "empty query: give some words to search for")
        if len(q) > self.limits.max_query:
            raise _Refused(400, f"the query has {len(q)} characters; at most {self.limits.max_query} are taken")
        return q


def _result(state: _State, moment: Any) -> dict:
    """A moment as the page shows it: times, scores and the URLs of its thumbnail, media and attention map."""
    best = moment.window_ids[0]
    number = state.index.window(best).video
    video = state.index.videos[number]
    media, offset, chunk_seconds = f"/api/media/{number}", 0.0, None
    if video.kind == "chunked":  # the page plays on into the next chunks until the moment's end
        chunk_seconds = video.ref.chunk_seconds
        chunk = max(0, math.floor(moment.start / chunk_seconds))
        media, offset = f"/api/media/{number}/{chunk}", chunk * chunk_seconds
    return {
        "rank": moment.rank, "video": moment.video, "start": moment.start, "end": moment.end,
        "score": moment.score, "similarity": moment.similarity, "vtm": moment.vtm, "window": best,
        "thumb": f"/api/thumb/{best}", "media": media, "media_offset": offset, "chunk_seconds": chunk_seconds,
        "attention": f"/api/attention/{best}" if state.attention else None,
    }  # fmt: skip


def _file(path: Path, what: str, media_type: str | None = None) -> FileResponse:
    """A file the index names (never one a request names); 404 when it is gone. Ranges: Starlette's FileResponse."""
    if not path.is_file():
        raise _Refused(404, f"{what} is not there: {path}")
    return FileResponse(path, media_type=media_type)


def _attention_png(state: _State, window: int, q: str, layer: str) -> bytes:
    """The PNG of ``q`` on window ``window``'s frames (those it was indexed from), cached by (window, text, layer).

    The model pass, the drawing (matplotlib is not thread-safe) and the cache are under the state's lock.
    """
    from egovlp.features.sources import read_frames
    from egovlp.viz import attention_maps, attention_png

    key = (window, q, layer)
    with state.lock:
        if key in state.pngs:
            state.pngs.move_to_end(key)
            return state.pngs[key]
    w = state.index.window(window)
    video = state.index.videos[w.video]
    frames = read_frames(video.ref, state.index.frame_times(window))  # DataError (404) when the video is gone
    model, tokenizer, device = state.searcher.model, state.searcher.tokenizer, str(state.searcher.device)
    with state.lock:
        maps = attention_maps(model, tokenizer, frames, q, layer, device)
        png = attention_png(maps, f'"{q}"  {video.id} {w.start:.1f}-{w.end:.1f} s')
        state.pngs[key] = png
        while len(state.pngs) > state.limits.attention_cache:
            state.pngs.popitem(last=False)
    return png


def _install_guards(app: FastAPI, limits: Limits) -> None:
    """Refuse what no route takes before routing, and answer every refusal as ``{"error": message}``."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.method not in _METHODS:
            return _error(405, f"method {request.method} is not allowed: this server only answers GET")
        if len(request.url.path) + len(request.url.query) > limits.max_url:
            return _error(414, f"the URL is longer than {limits.max_url} bytes")
        if sum(len(k) + len(v) for k, v in request.headers.raw) > limits.max_headers:
            return _error(431, f"the request headers are longer than {limits.max_headers} bytes")
        if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
            return _error(413, "requests with a body are not accepted")
        return await call_next(request)

    @app.exception_handler(_Refused)
    async def refused(request: Request, e: _Refused):
        return _error(e.status, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _error(e.status_code, "no such page" if e.status_code == 404 else str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, p['loc'][1:]))}: {p['msg']}" for p in e.errors())
        return _error(422, f"bad request: {problems}")

    @app.exception_handler(DataError)
    async def data_error(request: Request, e: DataError):  # an unreadable or missing video
        return _error(404, str(e))

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, e: ConfigError):
        return _error(400, str(e))


def _add_file_routes(app: FastAPI, state: _State) -> None:
    """Thumbnails and videos: files the index names, found by the integer ids a request gives."""

    @app.get("/api/thumb/{window}")
    def thumb(window: int) -> FileResponse:
        path = state.index.thumbnail_path(state.window(window)).resolve()
        if not path.is_relative_to(state.root):  # the manifest's ids are checked at index time; checked again here
            raise _Refused(404, f"window {window} has no thumbnail in the index")
        return _file(path, f"the thumbnail of window {window}", "image/jpeg")

    @app.get("/api/media/{video}")
    def media(video: int) -> FileResponse:
        v = state.video(video)
        if v.kind != "file":
            raise _Refused(404, f"video {video} ({v.id}) is chunked: ask for /api/media/{video}/<chunk>")
        return _file(Path(v.source), f"video {video} ({v.id})")

    @app.get("/api/media/{video}/{chunk}")
    def media_chunk(video: int, chunk: int) -> FileResponse:
        from egovlp.data.video_io import chunk_path

        v = state.video(video)
        num_chunks = max(1, math.ceil(v.duration / v.ref.chunk_seconds - 1e-9))
        if v.kind != "chunked" or not 0 <= chunk < num_chunks:
            raise _Refused(404, f"video {video} ({v.id}) has no chunk {chunk}")
        return _file(chunk_path(v.ref.path, v.ref.uid, chunk), f"chunk {chunk} of video {video} ({v.id})")


def create_app(index: VideoIndex, searcher: Searcher, limits: Limits | None = None) -> FastAPI:
    """The app serving ``index`` with ``searcher`` (its model also draws the attention maps)."""
    state = _State(index, searcher, limits or Limits())
    lim = state.limits
    app = FastAPI(title="egovlp search", docs_url=None, redoc_url=None, openapi_url=None)
    _install_guards(app, lim)
    _add_file_routes(app, state)

    @app.get("/")
    def page() -> Response:
        return Response(state.static["index.html"], media_type="text/html")

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC:
            raise _Refused(404, f"no static file {name!r}")
        return Response(state.static[name], media_type=STATIC[name])

    @app.get("/api/info")
    def info() -> dict:
        model = index.manifest.get("settings", {}).get("model", {})
        return {
            "num_videos": len(index.videos), "num_windows": index.num_windows, "model": model.get("arch", ""),
            "attention": state.attention, "rerank": state.attention and hasattr(searcher.model, "vtm_probability"),
            "max_query": lim.max_query, "max_top_k": lim.max_top_k,
        }  # fmt: skip

    @app.get("/api/search")
    def search(q: str = "", k: int = Query(10, ge=1, le=lim.max_top_k), rerank: int = Query(0, ge=0)) -> dict:
        text = state.text(q)
        if rerank > lim.max_rerank:
            raise _Refused(400, f"rerank is at most {lim.max_rerank}, got {rerank}")
        began = time.perf_counter()
        with state.lock:
            moments = searcher.search(text, top_k=k, rerank=rerank)
        ms = 1000 * (time.perf_counter() - began)
        return {"query": text, "milliseconds": ms, "results": [_result(state, m) for m in moments]}

    @app.get("/api/attention/{window}")
    def attention(window: int, q: str = "", layer: str = "all") -> Response:
        if not state.attention:
            raise _Refused(404, "this model has no fusion layers, so there are no cross-attention maps")
        if layer != "all" and not layer.isdigit():
            raise _Refused(400, f"layer must be a fused text layer index or 'all', got {layer[:20]!r}")
        png = _attention_png(state, state.window(window), state.text(q), layer)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    return app
