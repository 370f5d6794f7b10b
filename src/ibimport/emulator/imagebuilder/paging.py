"""Image Builder's list pages: opaque nextTokens, and pages as short as the model allows.

The current model says of ListImages and ListImageBuildVersions: "A page can contain fewer
items than the maximum, with a ``nextToken`` to continue paging". ``--short-pages P`` cuts
that share of pages short (to 1 .. maxResults-1 items, so a client always progresses),
drawn from an RNG of ``--seed``'s so that a seeded run repeats page for page.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable

from ibimport.emulator.exceptions import InvalidPaginationTokenException

__all__ = ["Pager", "decode_page_token", "encode_page_token"]


class Pager:
    """Takes one page of a list, full or (a ``short_share`` of the time) cut short."""

    def __init__(self, *, short_share: float = 0.0, seed: int | None = None) -> None:
        self.short_share = short_share
        self._rng = random.Random(seed)
        #: Pages answered shorter than asked while more items followed.
        self.short_pages = 0

    def reset(self) -> None:
        """Forget the count."""
        self.short_pages = 0

    def page(
        self, indexes: range, keep: Callable[[int], bool], *, max_results: int
    ) -> tuple[list[int], str | None]:
        """Take up to ``max_results`` kept indexes; the token points at the next kept one."""
        limit = max_results
        if self.short_share and max_results > 1 and self._rng.random() < self.short_share:
            limit = self._rng.randint(1, max_results - 1)
        taken: list[int] = []
        for i in indexes:
            if not keep(i):
                continue
            if len(taken) == limit:
                if limit < max_results:
                    self.short_pages += 1
                return taken, encode_page_token(i)
            taken.append(i)
        return taken, None


def encode_page_token(index: int) -> str:
    """An opaque nextToken; it is an index because the lists it pages are append-only."""
    return base64.urlsafe_b64encode(f"ibimport-emulator:{index}".encode()).decode()


def decode_page_token(token: str | None, limit: int) -> int:
    """The index a nextToken points at; garbage is InvalidPaginationTokenException."""
    if token is None:
        return 0
    try:
        prefix, _, index = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        start = int(index)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        start = -1
        prefix = ""
    if prefix != "ibimport-emulator" or not 0 <= start <= limit:
        raise InvalidPaginationTokenException()
    return start
