"""Every input the fuzzers found a bug with, and every seed of their corpora,
checked again by its harness's own ``check`` (fuzz/harnesses/*.py): the C and
pure-Python paths agree, and malformed input is refused with the documented
error only.  A leak of references in the C walks shows as blocks of CPython's
allocator that stay allocated however often the inputs are decoded again."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
HARNESSES = sorted(p.stem for p in (FUZZ / "harnesses").glob("[a-z]*.py"))


def harness(name: str) -> ModuleType:
    folder = str(FUZZ / "harnesses")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


def inputs(kind: str) -> Iterator[tuple[str, Path]]:
    for name in HARNESSES:
        for path in sorted((FUZZ / kind / name).glob("*")):
            yield name, path


REGRESSIONS = list(inputs("regressions"))


def test_every_harness_has_a_seed_corpus() -> None:
    assert HARNESSES, "no harness found under fuzz/harnesses"
    for name in HARNESSES:
        assert any((FUZZ / "corpus" / name).glob("*")), f"fuzz/corpus/{name} is empty"


@pytest.mark.parametrize(
    ("name", "path"), REGRESSIONS, ids=[f"{n}/{p.name}" for n, p in REGRESSIONS]
)
def test_an_input_a_fuzzer_found_a_bug_with_is_handled(name: str, path: Path) -> None:
    harness(name).check(path.read_bytes())


@pytest.mark.parametrize("name", HARNESSES)
def test_the_seed_corpus_passes_its_harness(name: str) -> None:
    check: Callable[[bytes], None] = harness(name).check
    for path in sorted((FUZZ / "corpus" / name).glob("*")):
        check(path.read_bytes())


@pytest.mark.parametrize(
    "name", ["json_decoder", "msgpack_decoder", "json_row", "dates", "payload"]
)
def test_the_c_walks_keep_no_references_to_what_they_decoded(name: str) -> None:
    check = harness(name).check
    data = [p.read_bytes() for p in sorted((FUZZ / "corpus" / name).glob("*"))]
    data += [p.read_bytes() for p in sorted((FUZZ / "regressions" / name).glob("*"))]
    rounds = max(5, 3000 // len(data))  # some thousands of decodes in all

    def run() -> None:
        for _ in range(rounds):
            for item in data:
                check(item)

    for _ in range(3):  # warm up: numpy's and re's caches, interned strings, lazy imports
        run()
    gc.collect()
    before = sys.getallocatedblocks()
    run()
    gc.collect()
    grown = sys.getallocatedblocks() - before
    # A reference leaked per decode would keep rounds * len(data) blocks or more;
    # caches that are still filling keep a few dozen.
    assert grown < rounds * len(data) // 5, f"{grown} blocks still allocated after decoding again"
