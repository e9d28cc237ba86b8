"""The FastAPI service over the Recommender (`driftrec serve`)."""

from driftrec.server.app import create_app

__all__ = ["create_app"]
