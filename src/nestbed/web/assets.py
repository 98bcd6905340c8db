"""The browser libraries the page loads, served from this package's node_modules/ (put there by `npm ci` from
package-lock.json, which ./run's install step runs), never from a CDN and never copied into the repository.

    path = assets.vendor_file("cytoscape.min.js")    # the file, or a one-line AssetsMissing / UnknownAsset
    assets.content_type("cytoscape.min.js")          # "text/javascript; charset=utf-8"
    assets.missing()                                  # the one line to answer the page with, or None

Only the names in VENDOR are served: a URL name is looked up in the table, never joined to a path, so `../`
or any other file under node_modules (16 MB of demos and sources) cannot be reached. pyproject.toml's
package-data lists the same files (a wheel carries them when npm ci ran before it was built).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nestbed.errors import NestbedError

PREFIX = "/vendor/"
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"


@dataclass(frozen=True)
class Asset:
    file: str            # under node_modules/
    content_type: str
    global_name: str     # what the UMD script defines on window ("" for a stylesheet)


# URL name → file, in the order the page loads them (each after what it needs: fcose needs coseBase, which needs
# layoutBase). Versions: package.json's exact pins.
VENDOR: dict[str, Asset] = {
    "cytoscape.min.js": Asset("cytoscape/dist/cytoscape.min.js", JAVASCRIPT, "cytoscape"),
    "layout-base.js": Asset("layout-base/layout-base.js", JAVASCRIPT, "layoutBase"),
    "cose-base.js": Asset("cose-base/cose-base.js", JAVASCRIPT, "coseBase"),
    "cytoscape-fcose.js": Asset("cytoscape-fcose/cytoscape-fcose.js", JAVASCRIPT, "cytoscapeFcose"),
    "uPlot.iife.min.js": Asset("uplot/dist/uPlot.iife.min.js", JAVASCRIPT, "uPlot"),
    "uPlot.min.css": Asset("uplot/dist/uPlot.min.css", CSS, ""),
}


class AssetsMissing(NestbedError):
    """npm ci has not run here (or node_modules was removed): the page cannot work."""


class UnknownAsset(NestbedError):
    """A name that is not in VENDOR (the server answers 404)."""


def web_dir() -> Path:
    """This package's directory: package.json, package-lock.json and node_modules/ are here."""
    return Path(__file__).resolve().parent


def node_modules(base: Path | None = None) -> Path:
    return (base or web_dir()) / "node_modules"


def _missing_line(base: Path, file: str) -> str:
    return f"web assets missing: run ./run (npm ci in {base}): no node_modules/{file}"


def vendor_file(name: str, base: Path | None = None) -> Path:
    """The file served as /vendor/<name>. `base` is the web directory (tests give their own)."""
    asset = VENDOR.get(name)
    if asset is None:
        raise UnknownAsset(f"no such web asset: {name[:100]!r}")
    directory = base or web_dir()
    path = node_modules(directory) / asset.file
    if not path.is_file():
        raise AssetsMissing(_missing_line(directory, asset.file))
    return path


def content_type(name: str) -> str:
    asset = VENDOR.get(name)
    if asset is None:
        raise UnknownAsset(f"no such web asset: {name[:100]!r}")
    return asset.content_type


def missing(base: Path | None = None) -> str | None:
    """The one line the server answers the page with when any library is absent, else None."""
    directory = base or web_dir()
    for asset in VENDOR.values():
        if not (node_modules(directory) / asset.file).is_file():
            return _missing_line(directory, asset.file)
    return None


def scripts() -> list[str]:
    """The scripts' URLs, in load order (for the page's <script> tags)."""
    return [PREFIX + name for name, asset in VENDOR.items() if asset.content_type == JAVASCRIPT]


def stylesheets() -> list[str]:
    return [PREFIX + name for name, asset in VENDOR.items() if asset.content_type == CSS]
