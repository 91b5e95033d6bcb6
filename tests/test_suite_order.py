"""conftest's longest-first file order names files that exist (a renamed file would
silently drop to the end of the run, where a long file leaves one worker alone)."""

from __future__ import annotations

from pathlib import Path

from conftest import LONGEST_FILES_FIRST


def test_every_file_in_the_longest_first_order_exists():
    tests = Path(__file__).resolve().parent
    missing = [name for name in LONGEST_FILES_FIRST if not (tests / name).is_file()]
    assert missing == []
    assert len(set(LONGEST_FILES_FIRST)) == len(LONGEST_FILES_FIRST)
