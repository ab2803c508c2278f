"""The ``semgrad-guard`` command line.

Each layer registers its own sub-commands: ``calibrate`` (``--labelled`` for the learned
probability of error), ``score``, ``fit-thresholds``, ``set-threshold``, ``audit`` and
``review``. (The benchmark has its own command, ``semgrad-bench``.)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .errors import SemGradGuardError

# Modules that add sub-commands through ``register(subparsers)``.
_COMMAND_MODULES = (
    "semgrad_guard.calibration.cli",
    "semgrad_guard.scoring.cli",
    "semgrad_guard.policy.cli",
    "semgrad_guard.policy.audit_cli",
    "semgrad_guard.review.cli",
    "semgrad_guard.serving.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semgrad-guard",
        description="Sampling-free uncertainty scores (SemGrad) for local Hugging Face LLMs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SemGradGuardError as exc:
        print(f"semgrad-guard: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
