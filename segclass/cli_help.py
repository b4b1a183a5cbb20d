"""One argparse help format for every command line of the project, and one way to count things in its output.

Descriptions keep their line breaks (they hold example commands), and a flag's
default is shown only when it says something: not when the help text already
explains it, and not for "not given" values (None, False, an empty list).
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or (isinstance(default, (list, tuple)) and not default)
        if ("default:" in text or "(default" in text or unset or default is argparse.SUPPRESS
                or action.option_strings == [] or isinstance(action, argparse._HelpAction)):
            return text
        return f"{text} (default: %(default)s)"


def counted(number: int, noun: str) -> str:
    """`1 run`, `2 runs`: a count as the console prints it."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
