"""``egovlp configs``: the experiment presets shipped with egovlp.

egovlp configs                      # every preset, one line each: group/name and what it is
egovlp configs finetune/epic_mir    # print a preset's YAML (copy it to a file, edit, pass the file to --config)
egovlp configs epic_mir --group eval

Any command's ``--config`` takes a preset name (``group/name``, or the bare name within the command's group:
``egovlp finetune epic_mir --config epic_mir``) or a path to a YAML file.
"""

from __future__ import annotations

import argparse
import shutil
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "configs",
        help="list the shipped config presets, or print one",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", nargs="?", help="a preset to print (group/name, or a bare name that is unique)")
    p.add_argument("--group", help="the group a bare name is looked up in (pretrain, eval, finetune, extract)")
    p.set_defaults(func=run)


def format_presets(presets: dict[str, str], width: int | None = None) -> str:
    """One line per preset, ``name  description``; descriptions are cut to ``width`` columns if given."""
    pad = max((len(name) for name in presets), default=0) + 2
    lines = []
    for name, description in presets.items():
        line = f"{name:{pad}s}{description}".rstrip()
        if width is not None and len(line) > width:
            line = line[: max(width - 3, pad)] + "..."
        lines.append(line)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from egovlp.configs import list_presets, preset_text

    if args.name:
        print(preset_text(args.name, args.group), end="")
        return 0
    presets = list_presets()
    if args.group:
        presets = {k: v for k, v in presets.items() if k.startswith(f"{args.group}/")}
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else None  # full lines in a pipe
    print(format_presets(presets, width))
    return 0
