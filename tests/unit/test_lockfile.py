"""S9 (security review): the image's dependencies come from a lock file with hashes.

Where it sits: the Dockerfile's build stage runs ``pip wheel --require-hashes -r requirements.lock``
for the dependencies and ``pip wheel --no-deps .`` for dklb; the runtime stage installs from those
wheels only. These tests read the files (no network): every dependency pyproject.toml names,
and every one of theirs as installed here, is pinned once, with sha256 hashes, to a version that
satisfies every specifier on the way, and PyYAML to a release with the merge-key fix.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.unit.test_deploy_manifests import dockerfile_stages

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


class Pin(NamedTuple):
    version: Version
    hashes: tuple[str, ...]


def lock_entries() -> dict[str, Pin]:
    """The lock's requirements by canonical name; every line must be a pin or a hash."""
    entries: dict[str, Pin] = {}
    logical = ""
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    for line in [*lines, ""]:
        stripped = line.split("#", 1)[0].strip() if not line.lstrip().startswith("--hash") else line.strip()
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        if logical.strip():
            words = shlex.split(logical)
            requirement = Requirement(words[0])
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"{words[0]}: not pinned to one version"
            assert not requirement.extras and requirement.url is None and requirement.marker is None, words[0]
            for word in words[1:]:
                assert HASH.fullmatch(word), f"{words[0]}: {word!r} is not a sha256 hash option"
            name = canonicalize_name(requirement.name)
            assert name not in entries, f"{name} is pinned twice"
            entries[name] = Pin(Version(specifier.version), tuple(words[1:]))
        logical = ""
    return entries


def project_requirements() -> list[Requirement]:
    with (REPO / "pyproject.toml").open("rb") as stream:
        return [Requirement(r) for r in tomllib.load(stream)["project"]["dependencies"]]


def closure() -> list[tuple[str, Requirement]]:
    """(who asks, requirement) for dklb's dependencies and, as installed here, theirs, with the
    extras asked for; markers evaluated for this interpreter (Linux, CPython 3.11)."""
    found: list[tuple[str, Requirement]] = []
    extras_of: dict[str, set[str]] = {}
    todo = [("dklb", r) for r in project_requirements()]
    while todo:
        who, requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        found.append((who, requirement))
        name = canonicalize_name(requirement.name)
        new = name not in extras_of or not set(requirement.extras) <= extras_of[name]
        extras = extras_of.setdefault(name, set())
        extras |= set(requirement.extras)
        if not new:
            continue
        for text in metadata.distribution(requirement.name).requires or []:
            theirs = Requirement(text)
            if theirs.marker is None or any(theirs.marker.evaluate({"extra": e}) for e in {"", *extras}):
                theirs.marker = None
                todo.append((name, theirs))
    return found


def test_the_lock_pins_every_dependency_and_theirs_with_hashes() -> None:
    entries = lock_entries()
    asked = closure()
    assert {canonicalize_name(r.name) for _, r in asked} == set(entries), "the lock holds exactly these"
    for who, requirement in asked:
        pin = entries[canonicalize_name(requirement.name)]
        assert pin.hashes, f"{requirement.name}: no hash"
        assert requirement.specifier.contains(pin.version, prereleases=True), (
            f"{requirement.name}=={pin.version} does not satisfy {who}'s {requirement}"
        )


@pytest.mark.parametrize("requirement", project_requirements(), ids=str)
def test_each_direct_dependency_is_pinned_within_pyprojects_range(requirement: Requirement) -> None:
    pin = lock_entries()[canonicalize_name(requirement.name)]
    assert requirement.specifier.contains(pin.version), f"{requirement} vs =={pin.version}"
    assert len(pin.hashes) >= 1


def test_pyyaml_is_locked_to_a_release_with_the_merge_key_fix() -> None:
    """S9 (security review): 6.0.4 de-duplicates merge keys (yaml/pyyaml#937)."""
    assert lock_entries()["pyyaml"].version >= Version("6.0.4")


def test_the_lock_says_how_to_regenerate_it() -> None:
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    header = "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if x[:1] not in "#")])
    assert "pip-compile --generate-hashes" in header and "pyproject.toml" in header
    assert "--output-file requirements.lock" in header


def test_the_image_builds_its_dependencies_from_the_lock_only() -> None:
    build = dockerfile_stages()[0]
    (run,) = [r for r in build["RUN"] if "pip wheel" in r]
    first, second = run.split("&&")
    assert "--require-hashes -r requirements.lock" in first and " . " not in f"{first} "
    assert second.split()[-1] == "." and "--no-deps" in second
    assert any("requirements.lock" in c for c in build["COPY"])
