"""Marketplace: install, update and remove services published in the reference format."""
