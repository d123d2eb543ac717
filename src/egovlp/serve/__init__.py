"""``egovlp serve``: a local web page to search an index of your videos, play the moments found and see the
model's cross-attention on them (FastAPI + uvicorn, plain HTML/JS in ``static/``, no build step)."""

from egovlp.serve.app import Limits, create_app

__all__ = ["Limits", "create_app"]
