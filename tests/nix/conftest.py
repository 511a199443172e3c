"""Every test in tests/nix runs real Nix; it is skipped (with the reason) only where Nix is absent."""

from __future__ import annotations

import pytest

from tests.nix.nixutil import HAVE_NIX


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="nix-instantiate not on PATH (install nix-bin to run the Nix tests)")
    for item in items:
        if "tests/nix/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.nix)
            if not HAVE_NIX:
                item.add_marker(skip)
