"""Prefect flows: each reads as a release recipe, top to bottom."""
