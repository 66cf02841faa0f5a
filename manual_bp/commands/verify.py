"""``manual-bp verify``: every equation against the torch oracle on random cases.

Examples::

    python -m manual_bp verify --quick
    python -m manual_bp verify --only "BP*,LAYER.*" --cases 50
    python -m manual_bp verify --report docs/verification.md --json docs/verification.json \\
        --pages docs/equations.md
    python -m manual_bp verify --figures docs/verification.json --pages docs/equations.md

Exit status: 0 when every comparison passed and every registered equation got
at least one case; 1 otherwise; 2 for bad options or paths (every output path is
checked before the run; no directory is created); 3 when torch is missing.
"""

from __future__ import annotations

import argparse
import sys

from manual_bp._argtypes import non_negative_int, positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from manual_bp.verify import DEFAULT_CASES, QUICK_CASES

    parser = subparsers.add_parser(
        "verify",
        help="check every derived equation against torch autograd on random cases",
        description=(
            "Run every registered check (reference/checks*.py) on random cases and tabulate, "
            "per equation ID, the cases tried and the worst normalised error max|Δ|/max|g_ref| "
            "against torch autograd and central finite differences. Needs torch: "
            'pip install -e ".[test]" -c constraints.txt'
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--cases",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"random cases per check (default {DEFAULT_CASES})",
    )
    size.add_argument(
        "--quick", action="store_true", help=f"a short run: {QUICK_CASES} cases per check"
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="seed of the cases (default 0)"
    )
    parser.add_argument(
        "--only",
        metavar="PATTERN",
        help='equation IDs to verify: globs separated by commas, e.g. "BP*,COST.*"',
    )
    parser.add_argument("--report", metavar="FILE.md", help="write the report as Markdown")
    parser.add_argument("--json", metavar="FILE", help="write the report as JSON")
    parser.add_argument(
        "--pages",
        metavar="FILE.md",
        help="write the equation index (docs/equations.md) with this run's figures",
    )
    parser.add_argument(
        "--figures",
        metavar="FILE.json",
        help="run nothing: take the figures for --pages from this verification JSON",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


#: Output flags and the suffixes their files must have.
OUTPUTS = {"report": (".md",), "json": (".json",), "pages": (".md",)}


def _preflight(args: argparse.Namespace) -> None:
    """Every path checked before the run: outputs writable files of the right kind (no
    directory is created), ``--figures`` a readable verification JSON."""
    from manual_bp._files import check_distinct, check_output_file

    if args.figures is not None and (args.pages is None or args.report or args.json):
        raise ValueError("--figures only goes with --pages (it runs no checks)")
    check_distinct({f"--{flag}": getattr(args, flag) for flag in ("figures", *OUTPUTS)})
    for flag, suffixes in OUTPUTS.items():
        path = getattr(args, flag)
        if path is not None:
            check_output_file(path, f"--{flag}", suffixes)


def run(args: argparse.Namespace) -> int:
    from manual_bp import verify

    _preflight(args)
    if args.figures is not None:
        figures = verify.read_figures(args.figures)
        verify.write_text(args.pages, verify.equations_page(figures))
        print(f"wrote {args.pages}")
        return 0
    cases = verify.QUICK_CASES if args.quick else args.cases
    try:
        report = verify.run_verification(
            cases=verify.DEFAULT_CASES if cases is None else cases,
            seed=args.seed,
            only=args.only,
            progress=not args.no_progress,
        )
    except verify.TorchMissingError as error:
        print(f"manual-bp verify: {error}", file=sys.stderr)
        return 3
    print(report.to_text(), end="")
    if args.report:
        verify.write_text(args.report, report.to_markdown(args.report))
        print(f"wrote {args.report}")
    if args.json:
        verify.write_text(args.json, report.to_json())
        print(f"wrote {args.json}")
    if args.pages:
        verify.write_text(args.pages, verify.equations_page(report.to_dict()))
        print(f"wrote {args.pages}")
    return 0 if report.passed else 1
