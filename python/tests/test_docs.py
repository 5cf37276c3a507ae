"""The documentation's Python code: every ```python block of README.md and
docs/*.md runs, twice in a row (a snippet must clean up after itself), and
leaves nothing in /dev/shm; with mypy installed, the blocks and
examples/python_consumer.py and camera_viewer.py type-check under --strict.

A block that needs what this machine may not have (a GPU, CuPy, PyTorch, a
camera) is marked on the line before its fence:

    <!-- test: skip (needs a GPU and PyTorch) -->
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP = re.compile(r"<!--\s*test:\s*skip\s*(.*?)\s*-->")


def python_blocks() -> list[tuple[str, str, str | None]]:
    """(where, code, why skipped or None) for each ```python block."""
    blocks = []
    for path in [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        if not os.path.exists(path):
            continue
        lines = open(path, encoding="utf-8").read().splitlines()
        i = 0
        while i < len(lines):
            if lines[i].strip() == "```python":
                start = i
                j = i + 1
                while lines[j].strip() != "```":
                    j += 1
                skip = None
                if start > 0:
                    m = SKIP.search(lines[start - 1])
                    if m:
                        skip = m.group(1) or "marked to skip"
                where = f"{os.path.relpath(path, ROOT)}:{start + 1}"
                blocks.append((where, "\n".join(lines[start + 1:j]) + "\n", skip))
                i = j
            i += 1
    return blocks


BLOCKS = python_blocks()


def shm_names() -> set[str]:
    return set(os.listdir("/dev/shm"))


def test_the_docs_have_python_blocks():
    assert len([b for b in BLOCKS if b[2] is None]) >= 2, BLOCKS


@pytest.mark.parametrize("where,code,skip", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_python_block_runs_twice_and_cleans_up(where, code, skip, tmp_path):
    if skip:
        pytest.skip(skip)
    before = shm_names()
    # A file rather than -c: multiprocessing's spawn children import it.
    script = tmp_path / "snippet.py"
    script.write_text(code)
    for run in (1, 2):
        r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"{where}, run {run}:\n{code}\n{r.stdout}{r.stderr}"
    # Other tests may run beside this one: only names this block could have
    # made (string literals in it) count.
    literals = set(re.findall(r"[\"']([A-Za-z0-9_.-]+)[\"']", code))
    left = (shm_names() - before) & literals
    assert not left, f"{where} left {sorted(left)} in /dev/shm"


needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed")


def mypy_strict(files: list[str], tmp_path, *options: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict over files, as a user's code sees the installed shmring."""
    # Run from an empty directory, so that the installed shmring (its stubs
    # and py.typed) is what mypy sees, not the source tree.
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), *options, *files], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)


@needs_mypy
def test_mypy_strict_accepts_the_examples(tmp_path):
    files = [os.path.join(ROOT, "examples", name) for name in ("python_consumer.py", "camera_viewer.py")]
    for n, (where, code, skip) in enumerate(BLOCKS):
        if skip:
            continue
        f = tmp_path / f"block_{n}.py"
        f.write_text(f"# {where}\n{code}")
        files.append(str(f))
    r = mypy_strict(files, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
