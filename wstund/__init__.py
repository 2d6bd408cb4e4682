"""wstund: a Trio daemon relaying WSTun rooms and tunnelling HTTP to agents behind NAT."""

__version__ = "0.1.0"
