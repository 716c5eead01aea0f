"""The distribution: a name of its own on PyPI, the same import names and command, a clean build."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

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


# -- the SDK alone: `pip install sluice-otel` without the `receiver` extra ---------------------

def test_the_receiver_extra_lists_what_extras_py_checks_for() -> None:
    from packaging.requirements import Requirement

    from sluice_collector.extras import RECEIVER_MODULES

    extra = {Requirement(r).name.lower() for r in pyproject()["project"]["optional-dependencies"]["receiver"]}
    core = {Requirement(r).name.lower() for r in pyproject()["project"]["dependencies"]}
    assert set(RECEIVER_MODULES.values()) == extra
    assert not extra & core
    assert {"pyyaml", "orjson", "prometheus-client", "grpcio-health-checking"} <= extra


def test_importing_the_masking_engine_does_not_load_opentelemetry() -> None:
    """`import sluice.masking` (the receiver's masking engine) once loaded the whole OTel SDK."""
    code = ("import sys, sluice.masking\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'opentelemetry', 'grpc', 'google'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
    code = "import sluice, sys; sluice.init; print('opentelemetry.sdk' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"  # ... and the SDK comes in on first use


def _link_distribution(name: str, site: Path, seen: set[str]) -> None:
    """Link every file `name` and its requirements installed here into `site` (a fresh venv's
    site-packages): those distributions as pip would have put them there, and nothing else."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    key = canonicalize_name(name)
    if key in seen:
        return
    seen.add(key)
    dist = importlib.metadata.distribution(name)
    for file in dist.files or ():
        if file.parts[0] == "..":  # scripts in bin/
            continue
        source = Path(str(dist.locate_file(file)))
        target = site / file
        if source.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    for text in dist.requires or ():
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _link_distribution(requirement.name, site, seen)


@pytest.fixture(scope="module")
def sdk_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the real wheel of this checkout installed by pip with `--no-deps`, plus
    exactly the distributions its core requirements (no extras) resolve to here. Returns bin/."""
    import email.parser
    import shutil
    import venv
    import zipfile

    from packaging.requirements import Requirement

    root = tmp_path_factory.mktemp("sdk-only")
    source = root / "src"  # built from a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for name in ("sdk", "collector_ext"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(root / "dist"), str(source)], check=True, timeout=300, capture_output=True)
    (wheel,) = (root / "dist").glob("sluice_otel-*.whl")
    venv.create(root / "venv", with_pip=False)
    python = root / "venv" / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300, capture_output=True)
    with zipfile.ZipFile(wheel) as archive:
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(archive.read(meta).decode())
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    seen: set[str] = set()
    for text in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _link_distribution(requirement.name, site, seen)
    return python.parent


def _env() -> dict[str, str]:
    """This environment without the checkout on PYTHONPATH (a faked-date run's shim stays)."""
    mine = {str(REPO), str(REPO / "sdk"), str(REPO / "collector_ext")}
    path = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in mine]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SLUICE_", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = os.pathsep.join(path)
    return env


def test_the_sdk_alone_has_none_of_the_receivers_dependencies(sdk_only: Path) -> None:
    """The venv really is SDK-only, or the tests below would prove nothing."""
    code = ("import importlib.util as u, sluice, sluice_collector\n"
            "print([m for m in ('yaml', 'orjson', 'prometheus_client', 'grpc_health') if u.find_spec(m)])\n"
            "print(sluice.__file__)")
    done = subprocess.run([str(sdk_only / "python"), "-c", code], capture_output=True, text=True,
                          timeout=60, env=_env(), check=True)
    missing, location = done.stdout.splitlines()
    assert missing == "[]"
    assert str(sdk_only.parent) in location  # the installed wheel, not the checkout


def test_an_sdk_only_install_runs_an_app_and_the_sluice_command(sdk_only: Path) -> None:
    """`sluice run` ships an app's logs to a real receiver; `--help` and `version` work; the
    masking engine imports without the OTel SDK."""
    from sluice_collector.testing import InMemorySink, start_receiver

    done = subprocess.run([str(sdk_only / "sluice"), "--help"], capture_output=True, text=True, timeout=60,
                          env=_env())
    assert done.returncode == 0, done.stderr
    assert "receiver" in done.stdout
    done = subprocess.run([str(sdk_only / "sluice"), "version"], capture_output=True, text=True, timeout=60,
                          env=_env())
    assert done.stdout.strip() == f"sluice {sluice.__version__}"
    code = ("import sys, sluice.masking\n"
            "print(sluice.masking.Masker(sluice.masking.MaskerConfig()).mask('password=hunter2'))\n"
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    done = subprocess.run([str(sdk_only / "python"), "-c", code], capture_output=True, text=True, timeout=60,
                          env=_env(), check=True)
    assert done.stdout.split() == ["password=[REDACTED:kv_secret]", "False"]

    sink = InMemorySink()
    receiver = start_receiver({"telemetry": {"listen": ""}}, sinks=[sink])
    try:
        program = "import logging; logging.getLogger('shop').warning('hello from an SDK-only install')"
        done = subprocess.run(
            [str(sdk_only / "sluice"), "run", "--service-name", "sdk-only", "--endpoint",
             f"http://{receiver.endpoint}", "--", str(sdk_only / "python"), "-c", program],
            capture_output=True, text=True, timeout=120, env=_env())
    finally:
        receiver.stop(5)
    assert done.returncode == 0, done.stderr
    bodies = [rec.body.string_value for refs in sink.by_category.values() for _rl, _sl, rec in refs
              if hasattr(rec, "body")]
    assert "hello from an SDK-only install" in bodies, (bodies, done.stderr)


@pytest.mark.parametrize("command", [["receiver", "run"], ["receiver", "check-config", "x.yaml"],
                                     ["logs", "query", "--api-key", "k"], ["audit", "verify", "."]])
def test_receiver_commands_without_the_extra_say_what_to_install(sdk_only: Path, command: list[str]) -> None:
    done = subprocess.run([str(sdk_only / "sluice"), *command], capture_output=True, text=True, timeout=60,
                          env=_env())
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"sluice: `sluice {' '.join(command[:2])}` needs the receiver's dependencies, which are not "
        "installed (missing: pyyaml, orjson, prometheus-client, grpcio-health-checking, tqdm, uvicorn, "
        "httptools); install them "
        "with: pip install 'sluice-otel[receiver]'"]
