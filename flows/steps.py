"""Deployment steps of our own, run by `prefect deploy` (build section of prefect.yaml).

`locate_checkout` runs at deploy time and names the checkout the workers run from: `KIMIDOCS_HOME` when
set, else the checkout this module was deployed from. A wrong `KIMIDOCS_HOME` fails the deploy with one
line saying what to set, instead of creating deployments whose runs crash in the worker with a
`FileNotFoundError` in a temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


class CheckoutNotFound(ValueError):
    """KIMIDOCS_HOME does not point at a kimidocs checkout."""


def locate_checkout(home: str | None = None) -> dict[str, str]:
    """The absolute path of the checkout workers use, as the step output `{"directory": ...}`."""
    value = home or os.environ.get("KIMIDOCS_HOME") or str(CHECKOUT)
    path = Path(value).expanduser().resolve()
    if not (path / "flows" / "analyze.py").is_file():
        raise CheckoutNotFound(
            f"KIMIDOCS_HOME={value!r} is not a kimidocs checkout (no flows/analyze.py there): set "
            "KIMIDOCS_HOME to the checkout the workers run from, or unset it to use this one "
            f"({CHECKOUT})"
        )
    return {"directory": str(path)}
