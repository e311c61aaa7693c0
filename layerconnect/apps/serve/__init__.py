"""Serving many tasks on one frozen encoder: request parsing and answers (:class:`Predictor`), and the
HTTP service (:func:`create_app`, ``layerconnect serve``)."""

from .options import ServeOptions
from .predictor import Predictor, Request

__all__ = ["Predictor", "Request", "ServeOptions", "create_app", "serve"]


def __getattr__(name):  # the HTTP part needs fastapi (the [serve] extra)
    if name in ("create_app", "serve", "Batcher"):
        from . import http

        return getattr(http, name)
    raise AttributeError(name)
