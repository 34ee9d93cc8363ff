"""Serving: the HTTP API (FastAPI + uvicorn)."""

from .app import create_app

__all__ = ["create_app"]
