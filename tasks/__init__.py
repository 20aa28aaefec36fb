"""Prefect tasks: thin wrappers that carry the retry policy around wheelflow's plain functions."""
