"""The web view's browser libraries (web/assets.py): npm ci's files are found, a missing one is one line, nothing
outside the allowlist is served, and the allowlist, package-data, package.json, the lockfile and .gitignore agree."""
from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from nestbed.web import assets

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "src" / "nestbed" / "web"


def test_npm_cis_files_are_found_and_are_the_libraries_the_page_expects() -> None:
    assert assets.missing() is None, assets.missing()        # ./run's install step runs npm ci here
    for name, asset in assets.VENDOR.items():
        path = assets.vendor_file(name)
        assert path.is_file() and path.is_relative_to(WEB / "node_modules")
        text = path.read_text()
        assert len(text) > 1000
        if asset.global_name:                                  # the UMD header names the window global
            assert asset.global_name in text[:5000] or asset.global_name in text[-5000:], name


def _tree(base: Path, skip: str | None = None) -> Path:
    for asset in assets.VENDOR.values():
        if asset.file != skip:
            (base / "node_modules" / asset.file).parent.mkdir(parents=True, exist_ok=True)
            (base / "node_modules" / asset.file).write_text("/* stand-in */")
    return base


def test_every_listed_file_is_served_from_its_own_tree(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert assets.missing(tmp_path) is None
    assert assets.vendor_file("cose-base.js", tmp_path) == tmp_path / "node_modules/cose-base/cose-base.js"
    assert assets.content_type("uPlot.min.css").startswith("text/css")
    assert assets.content_type("cytoscape.min.js").startswith("text/javascript")


def test_a_missing_library_is_one_line_that_says_how_to_fix_it(tmp_path: Path) -> None:
    _tree(tmp_path, skip="cytoscape-fcose/cytoscape-fcose.js")
    with pytest.raises(assets.AssetsMissing) as caught:
        assets.vendor_file("cytoscape-fcose.js", tmp_path)
    line = str(caught.value)
    assert line == (f"web assets missing: run ./run (npm ci in {tmp_path}): "
                    "no node_modules/cytoscape-fcose/cytoscape-fcose.js")
    assert assets.missing(tmp_path) == line and "\n" not in line
    assert assets.vendor_file("uPlot.iife.min.js", tmp_path).is_file()     # the others are still there
    empty = tmp_path / "fresh"                                             # a wheel built before npm ci
    assert assets.missing(empty) == (f"web assets missing: run ./run (npm ci in {empty}): "
                                     "no node_modules/cytoscape/dist/cytoscape.min.js")


@pytest.mark.parametrize("name", [
    "../package.json", "../../errors.py", "../assets.py", "..", "", "/etc/passwd", "%2e%2e%2fpackage.json",
    "cytoscape.min.js/../../package-lock.json", "cytoscape/dist/cytoscape.min.js", "cytoscape.cjs.js",
    "CYTOSCAPE.MIN.JS", "cytoscape.min.js ", "node_modules/uplot/dist/uPlot.min.css", "./uPlot.min.css",
])
def test_nothing_outside_the_allowlist_is_served(tmp_path: Path, name: str) -> None:
    _tree(tmp_path)
    (tmp_path / "node_modules/cytoscape/dist/cytoscape.cjs.js").write_text("// a file npm put there, not listed")
    (tmp_path / "package.json").write_text("{}")
    with pytest.raises(assets.UnknownAsset, match="^no such web asset: "):
        assets.vendor_file(name, tmp_path)
    with pytest.raises(assets.UnknownAsset):
        assets.content_type(name)


def test_the_page_loads_each_script_after_what_it_needs() -> None:
    order = assets.scripts()
    assert order[0] == "/vendor/cytoscape.min.js" and all(url.startswith("/vendor/") for url in order)
    names = [url.removeprefix("/vendor/") for url in order]
    assert names.index("layout-base.js") < names.index("cose-base.js") < names.index("cytoscape-fcose.js")
    assert assets.stylesheets() == ["/vendor/uPlot.min.css"]
    assert set(names) | {"uPlot.min.css"} == set(assets.VENDOR)


def test_a_wheel_carries_exactly_the_allowlisted_files_and_the_page() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert data["nestbed.web"] == ["static/*"] + [f"node_modules/{a.file}" for a in assets.VENDOR.values()]


def test_the_packages_are_pinned_and_locked_without_a_registry_address() -> None:
    package = json.loads((WEB / "package.json").read_text())
    assert package["private"] is True
    assert package["dependencies"] == {"cytoscape": "3.34.4", "cytoscape-fcose": "2.2.0", "uplot": "1.6.32"}
    lock = json.loads((WEB / "package-lock.json").read_text())
    assert lock["lockfileVersion"] == 3 and lock["packages"][""]["dependencies"] == package["dependencies"]
    locked = {key.removeprefix("node_modules/"): entry for key, entry in lock["packages"].items() if key}
    for name, version in package["dependencies"].items():
        assert locked[name]["version"] == version
    assert {a.file.split("/")[0] for a in assets.VENDOR.values()} <= set(locked)    # each served file is locked
    assert all(entry["integrity"].startswith("sha512-") for entry in locked.values())
    assert not [name for name, entry in locked.items() if "resolved" in entry], \
        "regenerate the lock with `npm install --ignore-scripts --omit-lockfile-registry-resolved`"


def test_node_modules_is_never_committed() -> None:
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    assert git("check-ignore", "-q", "src/nestbed/web/node_modules/cytoscape/package.json").returncode == 0
    assert git("ls-files", "src/nestbed/web/node_modules").stdout == ""
    assert git("check-ignore", "-q", "src/nestbed/web/package-lock.json").returncode == 1     # the lock is kept
