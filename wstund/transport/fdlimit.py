"""The descriptor limit a daemon needs for ``server.max_connections`` sockets."""

from __future__ import annotations

import resource

# Descriptors beyond the counted sockets: listeners, the admin socket and its clients, agent
# and outgoing connections, files, refusals under way, the event loop's own.
HEADROOM = 1024


def ensure_fd_limit(max_connections: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards what ``max_connections`` needs (never past the
    hard limit); return (limit now, limit needed)."""
    needed = max_connections + HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return (needed if soft == resource.RLIM_INFINITY else soft), needed
