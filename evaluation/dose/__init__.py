"""Dose evaluation (optional extra ``dose``): photon and proton plans optimised on the CT and recalculated on the sCT.

SynthRAD 2023's definitions with pyRadPlan's pencil-beam engines and pymedphys' gamma; see
:mod:`synthct.evaluation.dose.evaluate`. The heavy packages are imported only when a dose evaluation runs;
:func:`require_dose_extra` says how to install them when they are missing.
"""

from __future__ import annotations

import importlib.util

REQUIRED_MODULES = ("pyRadPlan", "pymedphys", "numba", "pydantic", "ipyopt")
INSTALL_HINT = (
    "dose evaluation needs the 'dose' extra: pip install -r evaluation/requirements-dose.txt --no-deps "
    "(pyRadPlan without its AI-agent dependencies), or build the evaluation image with --build-arg WITH_DOSE=1"
)


class DoseExtraMissing(RuntimeError):
    """The dose extra is not installed; the message says how to install it."""


def missing_modules() -> list[str]:
    """The dose extra's modules that cannot be imported here."""
    return [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def require_dose_extra() -> None:
    """Raise :class:`DoseExtraMissing` naming the missing modules and the install command."""
    missing = missing_modules()
    if missing:
        raise DoseExtraMissing(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
