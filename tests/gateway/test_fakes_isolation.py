"""The fakes of the outside world (workersim, stripefake, providerfake) are installed with the project but never
imported by the product at module level: importing every module of gateway/ and billing/ leaves them unloaded.
Nor is litellm (seconds to import): only the first request that goes to a hosted provider loads it."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import importlib, pkgutil, sys
import billing, gateway
names = []
for package in (gateway, billing):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("workersim", "stripefake", "providerfake", "litellm"))
print(len(names), " ".join(loaded))
"""


def test_product_modules_do_not_import_the_fakes() -> None:
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=True)
    count, _, loaded = done.stdout.strip().partition(" ")
    assert int(count) > 50  # every module of both packages was imported
    assert loaded == ""
