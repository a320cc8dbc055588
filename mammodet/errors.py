"""Errors that the user fixes by changing the command or its input.

Every command (``python -m mammodet.<name>``) prints a ``UserError`` as one line on stderr, ``error: <message>``,
and exits with status 2, with no traceback. The message names the path or config key and what was expected.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input or configuration: the message names the path or key, and what was expected there."""
