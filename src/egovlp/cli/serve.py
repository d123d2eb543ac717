"""``egovlp serve``: a local web page over an index built by ``egovlp index``: a search box, the moments found as
thumbnails with their time ranges, a player that plays each moment from its source video, and the model's
cross-attention map of the query on it.

egovlp serve INDEX_DIR                                  # the checkpoint and tokenizer recorded in the index
egovlp serve INDEX_DIR --port 8080 --checkpoint W.safetensors --tokenizer /models/roberta-base
"""

from __future__ import annotations

import argparse
import ipaddress
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a local web page to search an index, play the moments and see attention maps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("index", metavar="INDEX_DIR", help="an index folder written by `egovlp index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--checkpoint", metavar="W.safetensors", help="weights (default: the index's own)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: the index's own)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from egovlp.errors import ConfigError
    from egovlp.search import Searcher, VideoIndex
    from egovlp.serve import create_app

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1-65535, got {args.port}")
    index = VideoIndex.open(args.index)
    searcher = Searcher.from_index(index, args.checkpoint, args.tokenizer, args.device)
    app = create_app(index, searcher)
    if not _is_loopback(args.host):
        log.warning("listening on %s: anyone who can reach this address can search and watch these videos", args.host)
    print(
        f"serving {index.root} ({len(index.videos)} videos, {index.num_windows} windows) on http://{args.host}:{args.port}"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", h11_max_incomplete_event_size=16384)
    return 0
