"""Ids that become paths: an item id names its output file under ``--out`` and a video uid names its file under the
video root, so each is checked here, once, before it is joined to a folder.

A safe id is a relative POSIX path of one or more names separated by ``/`` (``clip-1``, ``sub/b``) where no name is
empty, ``.`` or ``..``, none is longer than :data:`MAX_NAME_BYTES` bytes (room for a suffix and the temporary-file
wrapping ``.<name>.<random>.tmp`` within the usual 255-byte limit), and nothing is absolute or holds a backslash or
a control character. Joined to a folder, a safe id therefore stays inside it (symbolic links the user placed inside
the folder aside).
"""

from __future__ import annotations

import re

from egovlp.errors import DataError

__all__ = ["MAX_NAME_BYTES", "check_id"]

MAX_NAME_BYTES = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not value:
        return "is empty"
    if _CONTROL.search(value):
        return "contains a control character"
    if "\\" in value:
        return "contains a backslash"
    if value.startswith("/"):
        return "is an absolute path"
    for name in value.split("/"):
        if name == "":
            return "has an empty path component ('//' or a trailing '/')"
        if name in (".", ".."):
            return f"has a {name!r} path component (it would leave its folder)"
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            return f"has a path component longer than {MAX_NAME_BYTES} bytes (too long for a file name)"
    return None


def check_id(value: str, what: str) -> str:
    """``value`` if it is a safe relative name (see the module doc), else :class:`DataError` ``"<what>: ..."``.

    ``what`` says where the id came from and what it is, e.g. ``"nlq.json: videos[0].clips[3]: clip_uid '../x'"``.
    """
    problem = _problem(value)
    if problem is not None:
        raise DataError(f"{what}: {problem}; ids become file names and must be relative names inside their folder")
    return value
