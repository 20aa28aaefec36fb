"""How much an archive may unpack to, counted while it is read: never trusting the sizes it declares.

A wheel (zip) or an sdist (tar.gz) of a few MB can unpack to gigabytes or terabytes (a compression
bomb): reading an entry whole (``ZipFile.read``, ``io.BytesIO`` of a tar) then takes that much
memory. Every reader of a built archive therefore streams it in blocks of ``BLOCK`` bytes and counts
the bytes it actually gets against one budget per archive: at most ``MAX_UNPACKED_BYTES`` in all,
and beyond ``RATIO_FREE_BYTES`` at most ``MAX_RATIO`` times the archive's own size. Real wheels and
sdists, CUDA fatbins included, unpack to under 10× their size; 1 GB of zeros packs 1000:1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from wheelflow.core.sizes import human_size

BLOCK = 1 << 20  # bytes read at a time
MAX_UNPACKED_BYTES = 16 * 2**30  # what one archive may unpack to, whatever its size
MAX_RATIO = 100  # unpacked bytes per archive byte, beyond RATIO_FREE_BYTES
RATIO_FREE_BYTES = 64 * 2**20  # a small archive may unpack to this much, whatever its ratio
MAX_MEMBERS = 200_000  # entries of one archive (each costs memory to list)

BOMB_FIX = (
    "fix: find what the build writes into it (a generated data file, a runaway loop in setup.py); "
    "a wheel or sdist is never larger than its sources and binaries"
)


class UnpackLimitExceeded(Exception):
    """The archive unpacks to more than its budget allows: ``str()`` is one line, without the archive's name."""


class UnpackBudget:
    """The bytes one archive may unpack to: ``take`` counts them as they are read."""

    def __init__(
        self,
        archive_size: int,
        *,
        limit: int = MAX_UNPACKED_BYTES,
        ratio: int = MAX_RATIO,
        free: int = RATIO_FREE_BYTES,
    ) -> None:
        self.archive_size = archive_size
        self.allowed = min(limit, max(free, ratio * archive_size))
        self.by_ratio = self.allowed < limit
        self.ratio = ratio
        self.total = 0

    def take(self, size: int, entry: str) -> None:
        """Count ``size`` more bytes of ``entry``; UnpackLimitExceeded once the total is over budget."""
        self.total += size
        if self.total <= self.allowed:
            return
        if self.by_ratio:
            raise UnpackLimitExceeded(
                f"{entry} unpacks past {human_size(self.allowed)}, more than {self.ratio}× the archive's "
                f"{human_size(self.archive_size)} (a compression bomb); {BOMB_FIX}"
            )
        raise UnpackLimitExceeded(
            f"{entry} unpacks past {human_size(self.allowed)}, the most one archive may hold; {BOMB_FIX}"
        )

    def blocks(self, stream: IO[bytes], entry: str) -> Iterator[bytes]:
        """``stream`` in blocks of at most BLOCK bytes, each counted before it is handed out."""
        while block := stream.read(BLOCK):
            self.take(len(block), entry)
            yield block


def count_members(count: int) -> None:
    """UnpackLimitExceeded once an archive lists more than MAX_MEMBERS entries."""
    if count > MAX_MEMBERS:
        raise UnpackLimitExceeded(
            f"it holds more than {MAX_MEMBERS:,} entries; fix: leave generated files out of the archive"
        )
