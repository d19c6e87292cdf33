"""The management API (aiohttp), the Prometheus endpoint and the dashboard.

``create_app(scheduler, ...)`` builds a mountable Application; ``serve(scheduler, api_config,
metrics)`` hosts it. See docs/observability.md.
"""

from __future__ import annotations

from .app import ApiServer, api_token, create_app, serve

__all__ = ["ApiServer", "api_token", "create_app", "serve"]
