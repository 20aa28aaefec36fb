"""The released source: git tags and credentials, checkouts, the exported tree, the version."""
