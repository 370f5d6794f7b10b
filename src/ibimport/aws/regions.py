"""Region names and endpoint URLs, checked before anything is opened.

A mistyped Region (``eu-wset-1``) is a valid host name, so botocore accepts it and the
mistake surfaces later as a DNS or credentials error far from its cause. The Regions
botocore's partitions know (``partitions.json`` and ``endpoints.json`` in its data) are
the reference; a name outside them is refused with the nearest known one.
"""

from __future__ import annotations

import difflib
from functools import cache
from urllib.parse import urlsplit

import botocore
import botocore.exceptions
import botocore.loaders

from ibimport.errors import ConfigError

__all__ = ["check_endpoint_url", "check_region", "known_regions"]


@cache
def known_regions() -> frozenset[str]:
    """Every Region of every partition the installed botocore knows (aws, aws-cn, ...)."""
    loader = botocore.loaders.create_loader()
    names: set[str] = set()
    for data_name in ("partitions", "endpoints"):
        try:
            data = loader.load_data(data_name)
        except botocore.exceptions.DataNotFoundError:  # partitions.json is newer than 1.30
            continue
        for partition in data.get("partitions", []):
            names.update(name for name in partition.get("regions", {}) if "global" not in name)
    return frozenset(names)


def check_region(name: str, *, given_as: str = "--region") -> None:
    """Raise ``ConfigError`` unless ``name`` is a Region botocore knows; suggest the nearest."""
    known = known_regions()
    if name in known:
        return
    near = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f": did you mean {near[0]}?" if near else ": expected a name such as eu-west-1"
    raise ConfigError(
        f"{given_as} {name!r} is not an AWS Region botocore {botocore.__version__} knows{hint}"
    )


def check_endpoint_url(url: str) -> None:
    """Raise ``ConfigError`` unless ``url`` is an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return
    example = f"http://{url}" if url and "://" not in url else "https://localhost:4566"
    raise ConfigError(
        f"--endpoint-url {url!r} is not an http:// or https:// URL with a host: "
        f"expected a URL such as {example}"
    )
