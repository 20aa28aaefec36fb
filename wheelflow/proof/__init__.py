"""Proof that what is served is what was built, and that it installs and passes its smoke test."""
