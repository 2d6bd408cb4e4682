"""Which build is running: ``$WSTUND_BUILD_ID`` (set by packaging), else the git commit of the
source tree the package runs from, else the version. Read once at start-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from . import __version__


def build_id() -> str:
    """The build's id, as ``/health`` and ``wstund_build_info`` report it."""
    given = os.environ.get("WSTUND_BUILD_ID", "").strip()
    if given:
        return given
    source = Path(__file__).resolve().parent.parent
    if (source / ".git").exists():
        try:
            done = subprocess.run(
                ["git", "-C", str(source), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return __version__
        return done.stdout.strip() or __version__
    return __version__
