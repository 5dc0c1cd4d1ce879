"""The country and continent codes steering rules may name, for config validation.

Countries are ISO 3166-1 alpha-2 codes as `pycountry` knows them, plus `XK` (Kosovo: a
user-assigned code that GeoNames, MaxMind and DB-IP databases use).  Continents are the 7
GeoNames codes those databases use: AF AN AS EU NA OC SA.
"""

from __future__ import annotations

from functools import cache

import pycountry

from dnsfailover.geo.errors import UnknownCodeError

CONTINENTS: dict[str, str] = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
EXTRA_COUNTRIES: dict[str, str] = {"XK": "Kosovo"}


@cache
def countries() -> frozenset[str]:
    """Every known country code."""
    return frozenset(c.alpha_2 for c in pycountry.countries) | frozenset(EXTRA_COUNTRIES)


def country(code: str) -> str:
    """`code` as a known country code (upper case).

    :raises UnknownCodeError: naming the code, when no country has it.
    """
    upper = code.strip().upper()
    if upper not in countries():
        hint = " (a continent: use by: continent)" if upper in CONTINENTS else ""
        raise UnknownCodeError(f"unknown country code {code!r}: not ISO 3166-1 alpha-2{hint}")
    return upper


def continent(code: str) -> str:
    """`code` as a known continent code (upper case).

    :raises UnknownCodeError: naming the code and the known ones.
    """
    upper = code.strip().upper()
    if upper not in CONTINENTS:
        known = " ".join(CONTINENTS)
        raise UnknownCodeError(f"unknown continent code {code!r}: known are {known}")
    return upper
