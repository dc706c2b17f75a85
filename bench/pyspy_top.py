#!/usr/bin/env python3
"""Summarise py-spy `record -f raw` output (collapsed stacks): where the samples go.

Prints, as % of all samples: the top frames by self time, the top frames by
inclusive time, and the top project frames (supervisor, bots, ratelimit, config,
ipc) by inclusive time, plus a coarse breakdown by package (the innermost frame).

    .venv/bin/python bench/pyspy_top.py bench/out/prof/botvisor-1000-*/worker0.collapsed.txt
    .venv/bin/python bench/pyspy_top.py --within AiogramHandler.handle prof.txt
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

PROJECT = ("supervisor/", "bots/", "ratelimit/", "config/", "ipc/")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        root = Path(__file__).resolve().parent.parent
        path = path.removeprefix(str(root) + "/")
    return f"{m.group('func')} ({path})"


def _package(frame: str) -> str:
    short = _short(frame)
    inner = short.rsplit("(", 1)[-1].rstrip(")")
    if inner.startswith(PROJECT):
        return "project:" + inner.split("/", 1)[0]
    if "/" in inner:
        return inner.split("/", 1)[0]
    return inner.split(".", 1)[0] or "?"


def summarise(path: Path, top: int, within: str = "") -> str:
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    pkg: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if within:
            # keep the samples under the first frame naming `within`, from that frame in
            at = next((i for i, f in enumerate(frames) if within in f), None)
            if at is None:
                continue
            frames = frames[at:]
        total += n
        leaf = frames[-1]
        self_t[_short(leaf)] += n
        pkg[_package(leaf)] += n
        for f in set(_short(f) for f in frames):
            incl[f] += n
    if total == 0:
        return f"{path}: no samples"

    def block(title: str, counter: Counter[str], pred: object = None) -> list[str]:
        out = [f"\n{title}"]
        shown = 0
        for name, n in counter.most_common():
            if pred == "project" and not name.rsplit("(", 1)[-1].startswith(PROJECT):
                continue
            out.append(f"  {100 * n / total:5.1f}%  {name}")
            shown += 1
            if shown >= top:
                break
        return out

    lines = [f"{path}: {total} samples"]
    lines += block("self time (innermost frame)", self_t)
    lines += block("inclusive time, project code", incl, "project")
    lines += block("inclusive time, all", incl)
    lines += block("self time by package", pkg)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", type=Path, nargs="+", help="py-spy raw (collapsed) outputs")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--within",
        default="",
        help="only samples under a frame containing this text, e.g. 'AiogramHandler.handle'",
    )
    args = p.parse_args()
    for f in args.files:
        print(summarise(f, args.top, args.within))


if __name__ == "__main__":
    main()
