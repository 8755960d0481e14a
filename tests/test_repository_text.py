"""The repository's text speaks of the project only.

Every tracked text file is searched for absolute paths of a development
machine (they work nowhere else and tell nothing about the project) and for
words about how the project was developed rather than what it is. The
failure lists every offending file:line.
"""

import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# This file holds the patterns themselves (split, so that it does not hold
# the text it looks for).
THIS_FILE = os.path.relpath(os.path.abspath(__file__), ROOT).replace(os.sep, "/")

MACHINE_PATHS = {
    "/wo" + "rk/": re.compile(r"/wo" r"rk/"),
    "/home/<user>/": re.compile(r"/home/[\w.-]+/"),
    "/root/": re.compile(r"/root/"),
    "/tmp/pytest-of-": re.compile(r"/tmp/pytest-of-"),
    "/Users/": re.compile(r"/Users/"),
    "C:\\Users": re.compile(r"\b[A-Za-z]:(?:\\{1,2}|/)Users\b"),
}
DEVELOPMENT_WORDS = {
    "sess" + "ion": re.compile(r"\bsess" r"ions?\b", re.IGNORECASE),
    "work" + "place": re.compile(r"work" r"place", re.IGNORECASE),
    "lent to the " + "task": re.compile(r"lent to (?:this|the) " r"task", re.IGNORECASE),
    "../sha" + "red/": re.compile(r"\.\./sha" r"red/", re.IGNORECASE),
}
PATTERNS = {**MACHINE_PATHS, **DEVELOPMENT_WORDS}


def tracked_files():
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [name for name in listed.decode("utf-8").split("\0") if name]


def text_of(path):
    """The file's text, or None for a binary (or missing) file."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def offences(name, text):
    for number, line in enumerate(text.splitlines(), start=1):
        for label, pattern in PATTERNS.items():
            match = pattern.search(line)
            if match:
                yield f"{name}:{number}: {match.group(0)!r} ({label}): {line.strip()[:160]}"


def test_no_machine_paths_or_development_history_in_tracked_text():
    found, searched = [], 0
    for name in tracked_files():
        if name == THIS_FILE:
            continue
        text = text_of(os.path.join(ROOT, name))
        if text is None:
            continue
        searched += 1
        found.extend(offences(name, text))
    assert searched, "no tracked text file was found to search"
    assert not found, "absolute paths of a development machine or words about the project's development:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    "line",
    [
        "data in /wo" + "rk/data",
        "see /home/alice/x",
        "/root/.cache",
        "/tmp/pytest-of-bob/p0",
        "/Users/bob/x",
        r"C:\Users\bob",
        "C:\\\\Users\\\\bob",
        "this sess" + "ion measured",
        "Sess" + "ions ran",
        "the work" + "place",
        "no machine was lent to the " + "task",
        "../sha" + "red/notes",
    ],
)
def test_each_pattern_is_found(line):
    found = list(offences("f.md", "ok\n" + line))
    assert found and found[0].startswith("f.md:2:"), found


@pytest.mark.parametrize("line", ["~/tensorflow_datasets", "a home/user path", "professional", "C:Users"])
def test_ordinary_text_passes(line):
    assert not list(offences("f.md", line))
