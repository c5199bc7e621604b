"""The one exception type for bad input.

A ``UserError`` carries a single line that names the file and the field at fault. The command
line prints it and exits with status 2; anything else that escapes is a bug in greenbench.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: a sweep file, a dataset folder, a command-line argument."""
