"""Every module of the product and the fakes has a name of its own (``__init__``/``__main__`` aside), so a
name says what a module holds wherever it is imported."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_module_names_are_unique() -> None:
    names = Counter(p.stem for package in ("gateway", "billing", "workersim", "stripefake", "providerfake")
                    for p in (ROOT / package).rglob("*.py") if p.stem not in ("__init__", "__main__"))
    assert sorted(n for n, count in names.items() if count > 1) == []
