"""Renamed public keywords keep working for one release, with a DeprecationWarning. A leaf
module: every layer may import it."""
from __future__ import annotations

import argparse
import sys
import warnings


def renamed_keyword(owner: str, old: str, new: str, old_value, new_value, default=None, *,
                    hint: str = "", stacklevel=3):
    """The value of a keyword renamed from ``old`` to ``new``, both None when not passed:
    ``new_value``, or ``old_value`` with a DeprecationWarning (``hint`` says how the value
    translates when it does), or ``default`` when neither was passed. Both at once is a
    TypeError."""
    if old_value is None:
        return default if new_value is None else new_value
    if new_value is not None:
        raise TypeError(f"{owner}() got both {old}= (deprecated) and {new}=; pass {new}= only")
    warnings.warn(f"{owner}({old}=...) is deprecated; use {new}={hint or '...'}",
                  DeprecationWarning, stacklevel=stacklevel)
    return old_value


class DeprecatedFlag(argparse.Action):
    """The old spelling of a renamed command-line option (hidden from --help): it still works,
    and says which option to use instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)
