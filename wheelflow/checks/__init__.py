"""Checks of built files before anything is published: audits, the ABI gate, device code."""
