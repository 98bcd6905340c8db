"""NS files (the NS-2 Tcl dialect of Emulab and DETER) as topologies: evaluated by a real Tcl interpreter in a
safe interp (prelude.tcl, evaluate.py), then read with Emulab's semantics (semantics.py) into the same raw
mapping the YAML loader builds, so every later error is the same one line, at the NS file's line. The file's
events (`$ns at`, Programs, CBR traffic: events.py) become an AAL scenario (aal.py) in `Imported.scenario`."""
from __future__ import annotations

from pathlib import Path

from nestbed.model.nsfile.semantics import Imported, meaning


def read(path: str | Path) -> Imported:
    from nestbed.model.nsfile.aal import scenario_mapping
    from nestbed.model.nsfile.evaluate import evaluate
    from nestbed.model.nsfile.events import member_shaped, read_events
    evaluated = evaluate(str(path))
    imported = meaning(evaluated, Path(path).stem.replace("_", "-"))
    segments = [str(spec["name"]) for spec in imported.raw["links"]] + list(imported.raw["lans"])
    played = read_events(evaluated, list(imported.raw["nodes"]), segments, member_shaped(imported.raw))
    imported.scenario = scenario_mapping(played)
    seen = {entry.split(": ", 1)[1] for entry in imported.ignored}
    for entry in played.ignored:                 # each kind of ignored line once, at its first line
        if entry.split(": ", 1)[1] not in seen:
            seen.add(entry.split(": ", 1)[1])
            imported.ignored.append(entry)
    imported.notes += played.notes
    return imported
