"""The one error type of secure aggregation."""

from __future__ import annotations


class SecAggError(ValueError):
    """A secure-aggregation stage cannot go on: bad parameters, too few shares, a bundle that
    fails authentication, a request that would reveal both secrets of one client. The message
    names the field, client or stage concerned; it never contains key material."""
