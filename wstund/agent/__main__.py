"""``python -m wstund.agent``."""

from . import main

main(prog_name="wstund-agent")
