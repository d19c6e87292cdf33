"""Returns its kwargs."""

from __future__ import annotations

from typing import Any


def run(**kwargs: Any) -> dict[str, Any]:
    return {"echo": kwargs}
