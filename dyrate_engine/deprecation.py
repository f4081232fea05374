"""Renamed public keywords keep working for one release, with a DeprecationWarning. A leaf
module: every layer may import it."""
from __future__ import annotations

import argparse
import sys
import warnings


def renamed_keyword(owner: str, old: str, new: str, old_value, new_value, *, stacklevel=3):
    """The value of a keyword renamed from ``old`` to ``new``: ``new_value``, unless the caller
    passed the old keyword (``old_value`` not None), which warns and wins."""
    if old_value is None:
        return new_value
    warnings.warn(f"{owner}({old}=...) is deprecated; use {new}=", DeprecationWarning,
                  stacklevel=stacklevel)
    return old_value


class DeprecatedFlag(argparse.Action):
    """The old spelling of a renamed command-line option (hidden from --help): it still works,
    and says which option to use instead."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = "--" + self.dest.replace("_", "-")
        print(f"warning: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)
