"""Create the project venv and install the pinned dev requirements; used by `make venv`.

Needs nothing but a python3 >= 3.11 and its standard library. Debian's python3 ships
`venv` without `ensurepip` (that is the python3-venv package), so when ensurepip is
missing the venv is made `--without-pip` and pip is installed from its wheel on PyPI,
checked against the sha256 that PyPI's JSON API publishes. Everything after that is
plain pip, so pip's own configuration (pip.conf, PIP_* variables) applies unchanged.

Written to parse on Python 3.7 too, so that an old python3 gets a clear message.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import importlib.util
import json
import os
import ssl
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

MIN_PYTHON = (3, 11)
PIP_JSON_URL = "https://pypi.org/pypi/pip/json"
TIMEOUT_S = 120
ROOT = Path(__file__).resolve().parent.parent


class BootstrapError(Exception):
    """Something the user has to fix; the message says what and how."""


def say(message: str) -> None:
    print("bootstrap: " + message, file=sys.stderr, flush=True)


def check_python() -> None:
    if sys.version_info[:2] < MIN_PYTHON:
        raise BootstrapError(
            f"botvisor needs Python >= {'.'.join(map(str, MIN_PYTHON))}, but {sys.executable} "
            f"is {sys.version.split()[0]}. Install a newer python3 (Debian 12 has 3.11) "
            "or point make at one: `make PYTHON=/path/to/python3.11 ...`."
        )


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _runs(cmd: list[str]) -> bool:
    try:
        return (
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
            == 0
        )
    except OSError:
        return False


def venv_usable(venv: Path) -> bool:
    """True if the venv's python runs and is new enough."""
    code = f"import sys; sys.exit(sys.version_info[:2] < {MIN_PYTHON!r})"
    return _runs([str(venv_python(venv)), "-c", code])


def has_pip(python: Path) -> bool:
    return _runs([str(python), "-m", "pip", "--version"])


def create_venv(venv: Path) -> None:
    """Make `venv` with this interpreter; fall back to --without-pip if ensurepip fails."""
    if importlib.util.find_spec("venv") is None:
        raise BootstrapError(
            f"{sys.executable} has no venv module. Install it (Debian: apt-get install "
            "python3-venv) or use another python3: `make PYTHON=/path/to/python3.11 ...`."
        )
    clear = ["--clear"] if venv.exists() else []
    if importlib.util.find_spec("ensurepip") is not None:
        say(f"creating {venv} with {sys.executable}")
        done = subprocess.run([sys.executable, "-m", "venv", *clear, str(venv)])
        if done.returncode == 0:
            return
        say("`python3 -m venv` failed; retrying without pip and fetching pip from PyPI")
        clear = ["--clear"]
    else:
        say(f"{sys.executable} has no ensurepip (Debian: python3-venv); pip comes from PyPI")
    subprocess.run([sys.executable, "-m", "venv", *clear, "--without-pip", str(venv)], check=True)


def _pip_config_cert() -> str | None:
    """The CA bundle pip is configured with, so our one download trusts what pip trusts."""
    if os.environ.get("PIP_CERT"):
        return os.environ["PIP_CERT"]
    xdg = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg] + [Path("/etc/pip.conf")]
    files += [Path.home() / ".pip" / "pip.conf", Path.home() / ".config" / "pip" / "pip.conf"]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(Path(os.environ["PIP_CONFIG_FILE"]))
    cert = None
    for path in files:  # later files win, as in pip
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(path)
        except (OSError, configparser.Error):
            continue
        for section in ("global", "install"):
            if parser.has_option(section, "cert"):
                cert = parser.get(section, "cert")
    return cert


def _ssl_context() -> ssl.SSLContext:
    cert = _pip_config_cert()
    if cert and Path(cert).is_file():
        return ssl.create_default_context(cafile=cert)
    return ssl.create_default_context()


def _fetch(url: str) -> tuple[bytes, str]:
    """The body of `url` and the address it came from after redirects."""
    request = urllib.request.Request(url, headers={"User-Agent": "botvisor-bootstrap"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=_ssl_context()) as resp:
            return resp.read(), resp.geturl()
    except OSError as err:  # URLError wraps TLS failures in .reason
        if isinstance(err, ssl.SSLError) or isinstance(getattr(err, "reason", None), ssl.SSLError):
            raise BootstrapError(
                f"TLS to {url} failed ({err}). Is the CA bundle installed and does it trust "
                "your network's proxy? Debian: apt-get install ca-certificates; or set PIP_CERT "
                "or SSL_CERT_FILE to a CA bundle."
            ) from None
        raise BootstrapError(f"could not download {url}: {err}") from None


def pip_wheel_info(json_url: str = PIP_JSON_URL) -> tuple[str, str, str]:
    """(filename, url, sha256) of the newest pip wheel, from PyPI's JSON API."""
    body, base = _fetch(json_url)
    for file in json.loads(body)["urls"]:
        if (
            file.get("packagetype") == "bdist_wheel"
            and file["filename"].endswith("-py3-none-any.whl")
            and not file.get("yanked", False)
        ):
            # Mirrors may list the file relative to the JSON document.
            url = urllib.parse.urljoin(base, file["url"])
            return file["filename"], url, file["digests"]["sha256"]
    raise BootstrapError(f"no pip wheel listed at {json_url}")


def bootstrap_pip(python: Path, json_url: str = PIP_JSON_URL) -> None:
    """Install pip into the venv of `python` from its verified wheel; runs pip from the wheel."""
    filename, url, sha256 = pip_wheel_info(json_url)
    say(f"downloading {filename}")
    with tempfile.TemporaryDirectory(prefix="botvisor-pip-") as tmp:
        wheel = Path(tmp) / filename
        blob, _ = _fetch(url)
        digest = hashlib.sha256(blob).hexdigest()
        if digest != sha256:
            raise BootstrapError(
                f"{filename} has sha256 {digest}, PyPI says {sha256}; not installing it"
            )
        wheel.write_bytes(blob)
        # A pip wheel runs as-is: `python pip.whl/pip install pip.whl` (pip's docs).
        subprocess.run([str(python), str(wheel / "pip"), "install", str(wheel)], check=True)
    if not has_pip(python):
        raise BootstrapError(f"pip was installed but `{python} -m pip` does not run")


def install(python: Path, requirements: Path) -> None:
    pip = [str(python), "-m", "pip", "install"]
    subprocess.run([*pip, "-r", str(requirements)], check=True, cwd=ROOT)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv")
    parser.add_argument("--requirements", type=Path, default=ROOT / "requirements-dev.txt")
    parser.add_argument("--no-install", action="store_true", help="only make the venv and pip")
    args = parser.parse_args(argv)
    try:
        check_python()
        if not venv_usable(args.venv):
            create_venv(args.venv)
        python = venv_python(args.venv)
        if not has_pip(python):
            bootstrap_pip(python)
        if not args.no_install:
            install(python, args.requirements)
    except BootstrapError as err:
        say(f"error: {err}")
        return 1
    except subprocess.CalledProcessError as err:
        cmd = " ".join(str(c) for c in err.cmd)
        say(f"error: `{cmd}` exited with {err.returncode}")
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
