"""Indexes: the only package that speaks HTTP to an index, runs twine or writes through fsspec."""
