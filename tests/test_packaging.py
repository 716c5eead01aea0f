"""The distribution: a name of its own on PyPI, the same import names and command, a clean build."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from typing import Any

import sluice
import sluice_collector
from sluice import _runtime

REPO = Path(__file__).resolve().parents[1]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_distribution_is_not_called_sluice_which_pypi_gives_to_an_unrelated_project() -> None:
    assert pyproject()["project"]["name"] == "sluice-otel"


def test_installed_distribution_ships_the_sluice_packages_command_and_one_version() -> None:
    dist = importlib.metadata.distribution("sluice-otel")
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"sluice": "sluice_collector.service.cli:main"}
    version = pyproject()["project"]["version"]
    assert dist.version == sluice.__version__ == sluice_collector.__version__ == _runtime._SDK_VERSION == version


def test_license_is_an_spdx_expression_so_setuptools_does_not_warn() -> None:
    data = pyproject()
    assert data["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in data["build-system"]["requires"]


def test_every_viewer_asset_is_package_data() -> None:
    """The viewer ships inside the package (no CDN): pyproject's package-data must cover it."""
    import fnmatch

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["sluice_collector"]
    package = root / "collector_ext" / "sluice_collector"
    assets = [p.relative_to(package).as_posix() for p in (package / "query" / "ui").iterdir()]
    assert {"index.html", "app.js", "viewer.css"} <= {Path(a).name for a in assets}
    for asset in assets:
        assert any(fnmatch.fnmatch(asset, pattern) for pattern in patterns), asset
