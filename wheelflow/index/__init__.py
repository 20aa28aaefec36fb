"""Indexes and stores: the only package that speaks HTTP to an index, runs twine or writes through fsspec
(index targets, static indexes, the artifact store)."""
