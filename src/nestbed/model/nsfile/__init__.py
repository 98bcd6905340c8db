"""NS files (the NS-2 Tcl dialect of Emulab and DETER) as topologies: evaluated by a real Tcl interpreter in a
safe interp (prelude.tcl, evaluate.py), then read with Emulab's semantics (semantics.py) into the same raw
mapping the YAML loader builds, so every later error is the same one line, at the NS file's line."""
from __future__ import annotations

from pathlib import Path

from nestbed.model.nsfile.semantics import Imported, meaning


def read(path: str | Path) -> Imported:
    from nestbed.model.nsfile.evaluate import evaluate
    return meaning(evaluate(str(path)), Path(path).stem.replace("_", "-"))

