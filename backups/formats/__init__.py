"""Payload formats: each format's dump and restore live together in one module (``pg``, ``json``)."""
