"""The web view's page: a small HTML shell (this module) plus static/app.js and static/app.css, which fetch
`/api/topology`, draw both panes with Cytoscape, open the `/api/stream` feed and act on links by POST.

The shell names only same-origin files (the vendor libraries of web/assets.py, then this package's static files),
and an empty favicon, so the page loads nothing from outside the machine and logs no 404. Static files are
served from the STATIC allowlist: a URL name is looked up, never joined to a path.
"""
from __future__ import annotations

import html
from pathlib import Path

from nestbed.web import assets

STATIC_PREFIX = "/static/"
STATIC: dict[str, str] = {                     # URL name → content type (files in web/static/)
    "app.js": assets.JAVASCRIPT,
    "app.css": assets.CSS,
}


def static_file(name: str) -> Path:
    """The file served as /static/<name>; UnknownAsset for a name not in STATIC."""
    if name not in STATIC:
        raise assets.UnknownAsset(f"no such static file: {name[:100]!r}")
    return Path(__file__).resolve().parent / "static" / name


def shell(experiment: str) -> str:
    name = html.escape(experiment)
    styles = [*assets.stylesheets(), STATIC_PREFIX + "app.css"]
    scripts = [*assets.scripts(), STATIC_PREFIX + "app.js"]
    head = "".join(f'<link rel="stylesheet" href="{url}">' for url in styles)
    tail = "".join(f'<script src="{url}"></script>' for url in scripts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>nestbed: {name}</title>{head}</head>
<body data-experiment="{name}">
<header><h1>{name}</h1><span id="summary" data-testid="summary">loading…</span>
<span id="live" data-testid="live" class="stale">no counters yet</span></header>
<main>
<aside id="side"><input id="search" data-testid="search" type="search" placeholder="find a node" autocomplete="off">
<ul id="node-list" data-testid="node-list"></ul></aside>
<section class="pane"><h2>vtopo <small>as written</small></h2><div id="vtopo" data-testid="vtopo-pane"></div>
<p class="legend" data-testid="legend">width: use of the configured bandwidth · colour: <b class="legit">legitimate</b>
→ <b class="attack">attack (DSCP 8)</b> · grey: idle · dashed: down · hover a link for its figures</p></section>
<section class="pane"><h2>ptopo <small>where it runs: host → VM → node</small></h2>
<div id="ptopo" data-testid="ptopo-pane"></div></section>
<aside id="panel" data-testid="panel"><p class="hint">Select a node or a link.</p></aside>
</main>
<footer><h2>events</h2><ol id="event-log" data-testid="event-log"></ol></footer>
<p id="error" data-testid="error" hidden></p>
{tail}
</body></html>
"""
