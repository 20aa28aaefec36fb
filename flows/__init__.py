"""Prefect flows: each reads as a release recipe, top to bottom."""

from wheelflow.core.secretenv import make_non_dumpable

# A flow run started by a worker or `serve` holds the credentials in its environment: no other
# process of this user may read them from /proc/<pid>/environ or its memory.
make_non_dumpable()
