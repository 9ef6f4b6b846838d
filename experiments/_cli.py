"""The command line every study script shares: ``--quick`` and ``--out``, the sizes they pick,
and the claims' report and exit status."""

from __future__ import annotations

import argparse
import json
import os

from selfconsume.files import atomic_write


def setup(doc: str, name: str, quick_help: str, sizes: dict | None = None, argv=None):
    """Parses ``--quick`` and ``--out`` (default ``runs/<name>``), creates the output folder.

    Args:
        doc: the script's docstring (its first line describes the command).
        name: the study's name.
        quick_help: what ``--quick`` reduces.
        sizes: ``{name: (full, quick)}``, or ``None``.
        argv: the arguments (default: the command line).

    Returns:
        ``(args, sizes)``, ``sizes`` the values of the chosen mode (``None`` without ``sizes``).
    """
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", default=f"runs/{name}")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if sizes is None:
        return args, None
    return args, {key: v[1 if args.quick else 0] for key, v in sizes.items()}


def write_summary(out: str, summary: dict) -> None:
    """Writes ``summary`` to ``<out>/summary.json`` atomically (NumPy scalars as floats)."""
    atomic_write(os.path.join(out, "summary.json"),
                 lambda f: json.dump(summary, f, indent=2, default=float), binary=False)


def report(claims: list[dict], show=lambda c: f"[{c['value']}]", after: str | None = None) -> int:
    """Prints one line per claim (``show(claim)``: what follows its description), then ``after``;
    returns the exit status: 0 when every claim holds, else 1."""
    for c in claims:
        print(f"claim {'holds' if c['holds'] else 'FAILS'}: {c['description']} {show(c)}")
    if after is not None:
        print(after)
    return 0 if all(c["holds"] for c in claims) else 1
