"""Fake vendor upstreams served on loopback for a whole test module, scripted afresh for
each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes import openai as fake_openai
from tests.support.net import serve_asgi


def served(make_app: Callable[[], tuple[Any, Any]] = fake_openai.make_app,
           name: str = "upstream") -> Any:
    """A module-scoped fixture called ``name``: the app from ``make_app`` served over real
    HTTP, as ``(base_url, controller)``. Assign it to a module attribute of the same name."""

    def serve() -> Iterator[tuple[str, Any]]:
        app, fake = make_app()
        with serve_asgi(app) as url:
            yield url, fake

    return pytest.fixture(scope="module", name=name)(serve)


def fresh(name: str = "fake") -> Any:
    """A fixture called ``name``: the controller of the module's ``upstream`` fixture
    (see ``served``), its request log and reply queue emptied for each test."""

    def reset(upstream: tuple[str, Any]) -> Any:
        upstream[1].reset()
        return upstream[1]

    return pytest.fixture(name=name)(reset)
