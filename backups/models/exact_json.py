"""JSON whose numbers come back exactly: decimals are written with all their digits and read as ``Decimal``.

A selective restore keeps the rows it wrote (``Restore.before_images``) to compare them, value
for value, with the live rows when it is undone; ``DjangoJSONEncoder`` would turn a ``Decimal``
into a string and the default decoder would read ``12.50`` as a float.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

_NUMBER = "\u0000n:"  # marks a JSON number through json.dumps (PostgreSQL text never holds NUL)


class _Marked(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return f"{_NUMBER}{o}" if isinstance(o, Decimal) else super().default(o)


def dumps(value: Any) -> str:
    """``value`` as JSON, a ``Decimal`` as a JSON number with its digits and scale."""
    return re.sub(r'"\\u0000n:([^"]*)"', r"\1", json.dumps(value, cls=_Marked))


class ExactJSONEncoder(json.JSONEncoder):
    """For a ``JSONField``: :func:`dumps`."""

    def encode(self, o: Any) -> str:
        return dumps(o)


class ExactJSONDecoder(json.JSONDecoder):
    """For a ``JSONField``: numbers with a fraction or exponent read as ``Decimal``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parse_float", Decimal)
        super().__init__(*args, **kwargs)
