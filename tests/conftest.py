from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.demo.process import DemoTarget

from .servers import run_nginx


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real nginx on loopback, for the whole test session."""
    root: Path = tmp_path_factory.mktemp("nginx")
    with run_nginx(root) as url:
        yield url


@pytest.fixture
def demo_target() -> Iterator[DemoTarget]:
    """A demo target process on a free loopback port, stopped after the test."""
    with DemoTarget.start() as target:
        yield target
