"""The tunnel agent: keeps a socket to wstund and forwards tunnelled requests to a local URL."""

from __future__ import annotations

from .cli import main
from .session import Agent, AgentConfig, AuthenticationFailed

__all__ = ["Agent", "AgentConfig", "AuthenticationFailed", "main"]
