"""The generated part of ``docs/mutation.md``: per-module table and triaged survivors.

Shared by ``run_mutation.py`` (which runs mutmut) and ``replay.py``; not a test.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from triage import TRIAGE

BEGIN, END = "<!-- run_mutation:begin -->", "<!-- run_mutation:end -->"


def show(workdir: Path, name: str) -> str:
    """The mutant's diff (``-``/``+`` lines only), as ``mutmut show`` prints it."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(("-", "+"))]
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


ALIVE = ("survived", "no tests")
DONE = ("killed", "timeout", *ALIVE, "suspicious", "skipped", "caught by type check")


def _score(statuses: dict[str, str]) -> tuple[int, int]:
    """(killed, tested): a timeout counts as killed, a mutant no test reaches as survived."""
    tested = [s for s in statuses.values() if s in ("killed", "timeout", *ALIVE)]
    return sum(s in ("killed", "timeout") for s in tested), len(tested)


def _module_of(mutant: str, modules: list[str]) -> str:
    """``manual_bp.layers.dense.xǁDenseǁforward__mutmut_3`` -> ``manual_bp/layers/dense.py``."""
    for module in modules:
        if mutant.startswith(module[:-3].replace("/", ".") + "."):
            return module
    raise ValueError(f"mutant {mutant} belongs to none of {modules}")


def _table(states: list[dict]) -> list[str]:
    lines = [
        "| module | generated | sampled | killed before | alive before | score before |"
        " killed after | equivalent | score after (non-equivalent) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    totals = Counter()
    for state in states:
        modules = list(state["generated"])
        for module in modules:
            before = {n: s for n, s in state["before"].items() if _module_of(n, modules) == module}
            after = {**before, **{n: s for n, s in state["after"].items() if n in before}}
            kb, nb = _score(before)
            ka, _ = _score(after)
            equivalent = sum(
                _triage(n).startswith("equivalent") for n, s in after.items() if s in ALIVE
            )
            row = Counter(gen=state["generated"][module], sampled=len(before), kb=kb, nb=nb)
            row |= Counter(ka=ka, eq=equivalent)
            totals.update(row)
            lines.append(_row(f"`{module}`", row))
    lines.append(_row("**all**", totals))
    return lines


def _row(label: str, c: Counter) -> str:
    before = 100 * c["kb"] / max(c["nb"], 1)
    after = 100 * c["ka"] / max(c["nb"] - c["eq"], 1)
    return (
        f"| {label} | {c['gen']} | {c['sampled']} | {c['kb']} | {c['nb'] - c['kb']} |"
        f" {before:.1f} % | {c['ka']} | {c['eq']} | {after:.1f} % |"
    )


def _triage(name: str) -> str:
    """The triage of ``name``: its own entry, else the first entry whose key it contains."""
    if name in TRIAGE:
        return TRIAGE[name]
    return next((reason for key, reason in TRIAGE.items() if key in name), "not yet triaged")


def page_section(states: list[dict], args, command: str, groups: dict) -> str:
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commits = sorted({s["commit"] for s in states})
    lines = [
        BEGIN,
        f"## The other math modules: results (generated {date} by"
        " `tests/mutation/run_mutation.py`)",
        "",
        (
            f"- Regenerated from the recorded states by `{command}`; the runs that recorded"
            " them are listed in the section above"
            if args.page_only
            else f"- Command: `{command}` (mutmut {_version()}, under `nice -n 19`,"
            f" {args.max_children} workers, CPU shared with other sessions)"
        ),
        f"- Commit measured: {', '.join(f'`{c}`' for c in commits)} (`git archive`; the"
        " working tree, with other sessions' uncommitted edits, is not measured)",
        "- Sample: every k-th mutant of each group's sorted names, from the offsets listed per"
        " group (k, offset): **a sample, not a full run** (CPU budget).",
        "- A timeout counts as killed; a mutant that no listed test reaches (`no tests`) counts"
        ' as alive. "Score after" is killed / (sampled − equivalent).',
        "",
        "Groups and their tests (before → added after):",
        "",
    ]
    for state in states:
        _, tests, _ = groups[state["group"]]
        new = state.get("new_tests", [])
        lines.append(
            f"- **{state['group']}**: {', '.join(f'`{t}`' for t in tests)}"
            + (f" → {', '.join(f'`{t}`' for t in new)}" if new else "")
            + f"; sample (k, offset) {state.get('samples', [[state['sample'], 0]])}"
            + f", commit `{state['commit'][:10]}`"
            + f"; statuses before {dict(Counter(state['before'].values()))}"
        )
    lines += ["", *_table(states), "", "### Survivors of the old suite, triaged", ""]
    lines += ["| mutant | change | status after | triage |", "|---|---|---|---|"]
    for state in states:
        workdir = args.workdir / state["group"]
        for name, status in sorted(state["before"].items()):
            if status not in ALIVE:
                continue
            diff = show(workdir, name).replace("|", "\\|").splitlines()
            change = "<br>".join(f"`{line.strip()}`" for line in diff if line.strip() != "")
            short = name.split(".")[-1].replace("xǁ", "").replace("ǁ", ".")
            after = state["after"].get(name, "not rerun")
            lines.append(f"| `{short}` ({status}) | {change} | {after} | {_triage(name)} |")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_page(page: Path, section: str) -> None:
    text = page.read_text(encoding="utf-8") if page.exists() else "# Mutation testing\n"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    page.write_text(text, encoding="utf-8")


def _version() -> str:
    from importlib.metadata import version

    return version("mutmut")
