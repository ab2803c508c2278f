"""``semgrad-guard audit``: retention for the audit trail.

::

    semgrad-guard audit purge --trail audit.db --before 2025-01-01   (or --before 90d)
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigError
from ..review.cli import moment
from .audit import AuditTrail


def register(subparsers: Any) -> None:
    """Add the ``audit`` command and its sub-commands to the top-level parser."""
    audit = subparsers.add_parser("audit", help="delete old records from an audit trail",
                                  description="Work an audit trail file (AuditTrail).")
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    p = commands.add_parser("purge", help="delete the records made before a time")
    p.add_argument("--trail", required=True, metavar="PATH", help="the audit trail file")
    p.add_argument("--before", required=True, type=moment,
                   help="2025-01-31, 2025-01-31T12:00:00+00:00, or 90d (90 days ago)")
    p.set_defaults(func=_purge)


def _purge(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.trail):
        raise ConfigError(f"--trail {args.trail}: no such file")
    with AuditTrail(args.trail) as audit:
        deleted = audit.purge(args.before)
    print(f"deleted {deleted} audit record(s) from before "
          f"{args.before:%Y-%m-%d %H:%M:%S} UTC in {args.trail}")
    return 0
