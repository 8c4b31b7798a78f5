"""The web dashboard: `tuner dashboard`, or `create_app(storage)` for any ASGI server."""

from tuner.dashboard.app import check_bind, create_app, serve

__all__ = ["check_bind", "create_app", "serve"]
