"""How much of a caller's input an error reply may echo: a bounded prefix, never the whole.

Error messages quote what was refused (a type, a name, a path) to help the sender; quoting a
600 KB frame would send it back twice over (``message`` and ``error``), so it is cut.
"""

from __future__ import annotations

ECHO_LIMIT = 300  # characters of an error message
ID_ECHO_LIMIT = 256  # characters of a message id echoed in an error reply


def clip(text: str, limit: int = ECHO_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and how many more were cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"
