#!/usr/bin/env python3
"""check_layers.py - fail on any #include that points up or across the layers.

The static libraries alone do not catch it: a header-only use of an upper
layer (a struct, an inline function, an enum) links fine. The layers, bottom
to top, and what each may include (docs/architecture.md):

  bridge/lib    itself only
  bridge/model  bridge/lib
  sources       bridge/lib
  sinks         bridge/lib, bridge/model
  bridge/core   everything below
  bridge        everything (the top: main, config, the app wiring)

Usage: check_layers.py [SOURCE_ROOT]. Prints one line per offending include
(FILE:LINE: includes "X": LAYER may include only ...) and exits 1 if any."""
import os
import re
import sys

LAYERS = {
    "bridge/lib": {"bridge/lib"},
    "bridge/model": {"bridge/model", "bridge/lib"},
    "sources": {"sources", "bridge/lib"},
    "sinks": {"sinks", "bridge/model", "bridge/lib"},
    "bridge/core": {"bridge/core", "sources", "sinks", "bridge/model", "bridge/lib"},
    "bridge": {"bridge", "bridge/core", "sources", "sinks", "bridge/model", "bridge/lib"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def layer_of(path):
    """The layer a repo-relative path belongs to: the longest matching folder."""
    folder = os.path.dirname(path)
    while folder:
        if folder in LAYERS:
            return folder
        folder = os.path.dirname(folder)
    return None


def check(root):
    bad = []
    for top in ("bridge", "sources", "sinks"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if not name.endswith((".c", ".h")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                mine = layer_of(rel)
                if mine is None:
                    bad.append(f"{rel}: not in any layer folder ({', '.join(LAYERS)})")
                    continue
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    for n, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        target = m.group(1)
                        theirs = layer_of(target)
                        if theirs is None:
                            bad.append(f'{rel}:{n}: includes "{target}", which is in no layer '
                                       '(include headers by their path from the source root)')
                        elif theirs not in LAYERS[mine]:
                            allowed = ", ".join(sorted(LAYERS[mine]))
                            bad.append(f'{rel}:{n}: includes "{target}" ({theirs}): '
                                       f"{mine} may include only {allowed}")
    return bad


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..")
    bad = check(os.path.abspath(root))
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} include(s) break the layering (see docs/architecture.md)")
        return 1
    print("layers: every include points down or within its own layer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
