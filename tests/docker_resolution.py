"""What the Dockerfile's `pip install` steps ask for, and whether the index has it for the image's Python.

The image cannot be built here (no Docker engine), so its install steps are resolved against the index for the
image's platform instead: CPython 3.12 on the base image's Ubuntu, x86-64. Each pin must have a file that pip in
the image would take: a wheel whose tags it supports, else an sdist it builds.

This reads the index's listing (PEP 691) and a wheel's metadata file (PEP 658) and decides with packaging's tag,
version and marker logic, the standards pip implements, rather than running `pip install --dry-run --report`:
when the index does not advertise PEP 658 metadata (the PyPI mirror CI reaches does not), pip downloads every
wheel to read it: 526 MB for torch alone, and 266 s for the 30 wheel pins, 4 pip processes at a time.
"""
from __future__ import annotations

import json
import re
import shlex
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.parser import BytesParser
from email.message import Message
from functools import cache
from pathlib import Path

from dockerfile_parse import DockerfileParser
from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename,
                             parse_wheel_filename)
from packaging.version import Version

PYPI = "https://pypi.org/simple"
PYTHON = (3, 12)
# glibc of the base image's Ubuntu: the newest manylinux tag its pip accepts.
UBUNTU_GLIBC = {"22.04": (2, 35), "24.04": (2, 39)}
BASE = re.compile(r"nvidia/cuda:(?P<cuda>\d+\.\d+)\.\d+-cudnn-devel-ubuntu(?P<ubuntu>\d+\.\d+)")
TIMEOUT_S = 60


class IndexUnreachable(Exception):
    """The index did not answer at all (no network), as opposed to answering that something is missing."""


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    index: str
    extra_indexes: tuple[str, ...]
    source: str  # where the pin comes from, for messages

    @property
    def version(self) -> str | None:
        """The one version pinned with ==; None for anything looser, which no install step should ask for."""
        specs = list(self.requirement.specifier)
        return specs[0].version if len(specs) == 1 and specs[0].operator == "==" else None


@dataclass(frozen=True)
class Found:
    kind: str  # "wheel" or "sdist"
    filename: str
    url: str


@dataclass(frozen=True)
class Base:
    cuda: str  # major.minor, e.g. "13.0"
    ubuntu: str


def base_image(dockerfile: Path) -> Base:
    match = BASE.fullmatch(DockerfileParser(str(dockerfile)).baseimage or "")
    if not match:
        raise ValueError(f"{dockerfile}: the base is not an nvidia/cuda cudnn-devel Ubuntu image")
    return Base(match["cuda"], match["ubuntu"])


def image_tags(base: Base) -> list[tags.Tag]:
    """The tags pip in the image accepts, best first. packaging computes manylinux tags only for the running
    glibc, so the image's list is spelt out here: manylinux_2_N for every N up to its glibc, with PEP 600's
    legacy aliases."""
    glibc = UBUNTU_GLIBC[base.ubuntu]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms = []
    for minor in range(glibc[1], 4, -1):
        platforms.append(f"manylinux_2_{minor}_x86_64")
        if minor in legacy:
            platforms.append(f"{legacy[minor]}_x86_64")
    platforms.append("linux_x86_64")
    return [*tags.cpython_tags(PYTHON, platforms=platforms),
            *tags.compatible_tags(PYTHON, f"cp{PYTHON[0]}{PYTHON[1]}", platforms)]


def requirement_lines(path: Path) -> list[tuple[str, str]]:
    """(requirement, 'file:line') for each requirement in a pip requirements file, following -r."""
    lines = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            lines += requirement_lines(path.parent / line.split(maxsplit=1)[1])
        elif line.startswith("-"):
            raise ValueError(f"{path.name}:{number}: option {line!r} is not understood by this check")
        else:
            lines.append((line, f"{path.name}:{number}"))
    return lines


def install_steps(dockerfile: Path) -> list[Pin]:
    """Every pin that a `pip install` in a RUN instruction asks for, with the index it asks."""
    context = dockerfile.parent
    pins = []
    for instruction in DockerfileParser(str(dockerfile)).structure:
        if instruction["instruction"] != "RUN":
            continue
        lexer = shlex.shlex(instruction["value"], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, "&&"]:
            if token in ("&&", "||", ";", "|"):
                pins += pip_install_pins(command, context, instruction["startline"] + 1)
                command = []
            else:
                command.append(token)
    return pins


def pip_install_pins(command: list[str], context: Path, line: int) -> list[Pin]:
    while command and re.fullmatch(r"\w+=.*", command[0], re.DOTALL):  # VAR=value before the command (one word)
        command = command[1:]
    words = command[3:] if command[:3] == ["python", "-m", "pip"] else command
    if words[:2] != ["pip", "install"]:
        return []
    index, extra, wanted = PYPI, [], []
    args = iter(words[2:])
    for arg in args:
        if arg in ("-i", "--index-url"):
            index = next(args).rstrip("/")
        elif arg == "--extra-index-url":
            extra.append(next(args).rstrip("/"))
        elif arg in ("-r", "--requirement"):
            wanted += requirement_lines(context / next(args))
        elif grep := re.fullmatch(r"\$\(grep '(.+)' (\S+)\)", arg):  # "$(grep '^torch==' requirements.txt)"
            file = context / grep[2]
            wanted += [(text, f"{file.name} via Dockerfile:{line}") for text in file.read_text().splitlines()
                       if re.search(grep[1], text)]
        elif arg.startswith("-"):
            continue  # a flag: --no-cache-dir, --no-build-isolation
        else:
            wanted.append((arg, f"Dockerfile:{line}"))
    return [Pin(Requirement(text), index, tuple(extra), source) for text, source in wanted]


@cache
def listing(index: str, project: str) -> tuple[dict, ...]:
    """The files the index lists for a project (PEP 691 JSON)."""
    request = urllib.request.Request(f"{index}/{canonicalize_name(project)}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return tuple(json.load(response)["files"])
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return ()
        raise
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise IndexUnreachable(f"{index} did not answer: {error}") from error


@cache
def python_allowed(requires_python: str) -> bool:
    return SpecifierSet(requires_python).contains(".".join(map(str, PYTHON)), prereleases=True)


def find(pin: Pin, supported: list[tags.Tag]) -> Found | None:
    """The file pip would install for the pin on the image: its best-tagged wheel, else the sdist."""
    if pin.version is None:
        return None
    rank = {tag: position for position, tag in enumerate(supported)}
    name, version = canonicalize_name(pin.requirement.name), Version(pin.version)
    wheels, sdists = [], []
    for file in listing(pin.index, pin.requirement.name):
        try:
            file_name, file_version, _, file_tags = parse_wheel_filename(file["filename"])
        except InvalidWheelFilename:
            try:
                (file_name, file_version), file_tags = parse_sdist_filename(file["filename"]), None
            except InvalidSdistFilename:
                continue
        if (file_name, file_version) != (name, version) or file.get("yanked") or not python_allowed(
                file.get("requires-python") or ""):
            continue
        if file_tags is None:
            sdists.append(Found("sdist", file["filename"], file["url"]))
        elif (best := min((rank[tag] for tag in file_tags if tag in rank), default=None)) is not None:
            wheels.append((best, Found("wheel", file["filename"], file["url"])))
    if wheels:
        return min(wheels, key=lambda ranked: ranked[0])[1]
    return sdists[0] if sdists else None


def find_all(pins: list[Pin], supported: list[tags.Tag]) -> dict[Pin, Found | None]:
    """find() for every pin, 16 index requests at a time: waiting for the listings is the slow part."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(pins, pool.map(lambda pin: find(pin, supported), pins)))


@cache
def wheel_metadata(found: Found) -> Message:
    """A wheel's METADATA through PEP 658 (`<url>.metadata`), which PyPI serves for every wheel it lists."""
    try:
        with urllib.request.urlopen(found.url + ".metadata", timeout=TIMEOUT_S) as response:
            return BytesParser().parsebytes(response.read())
    except urllib.error.HTTPError as error:
        raise LookupError(f"{found.filename}: no PEP 658 metadata at {found.url}.metadata ({error.code})") from error


def wheel_cuda(metadata: Message) -> str | None:
    """The CUDA major.minor a torch wheel is built for, from what it requires on Linux x86-64: the
    `cuda-toolkit==13.0.x` meta-package (CUDA 13 builds) or `nvidia-cuda-runtime-cuXX==X.Y.*` (CUDA 12 builds).
    None for a wheel that requires no CUDA runtime (a CPU build)."""
    environment = {"platform_system": "Linux", "sys_platform": "linux", "platform_machine": "x86_64",
                   "python_version": ".".join(map(str, PYTHON)), "extra": ""}
    for line in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        if canonicalize_name(requirement.name) in ("cuda-toolkit", "nvidia-cuda-runtime") or re.fullmatch(
                r"nvidia-cuda-runtime-cu\d+", canonicalize_name(requirement.name)):
            pinned = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            if pinned:
                return ".".join(pinned[0].split(".")[:2])
    return None
