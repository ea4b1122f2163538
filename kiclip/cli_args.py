"""argparse `type=` functions for numeric options: a bad value is refused at parse time
(exit 2, naming the option, the value and the allowed range), before any work starts.

Standard library only, so every command (shard_tools and launch alike) can use it cheaply.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def number_type(kind: type = int, minimum: float | None = None, maximum: float | None = None,
                above: float | None = None) -> Callable[[str], int | float]:
    """An argparse `type=` that parses `kind` and rejects, at parse time, values below
    `minimum`, above `maximum` or not strictly above `above` (argparse then exits 2 naming the
    option, the value and the allowed range)."""
    bounds = [f">= {minimum}" if minimum is not None else "",
              f"> {above}" if above is not None else "",
              f"<= {maximum}" if maximum is not None else ""]
    allowed = " and ".join(b for b in bounds if b)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if ((minimum is not None and not value >= minimum)
                or (maximum is not None and not value <= maximum)
                or (above is not None and not value > above)):  # `not` also rejects NaN
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {allowed}")
        return value

    parse.__name__ = kind.__name__  # argparse's "invalid <name> value" fallback
    return parse


positive_int = number_type(int, minimum=1)
non_negative_int = number_type(int, minimum=0)
positive_float = number_type(float, above=0)
