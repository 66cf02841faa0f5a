"""Mutation testing of manual_bp with mutmut, and the page ``docs/mutation.md`` (issue 15).

Not a test (pytest does not collect this directory: see ``conftest.py`` here).
Usage, from the repository root (CPU is shared: the run is niced)::

    python tests/mutation/run_mutation.py --groups all --sample 15 --budget-minutes 75

A *group* (:data:`GROUPS`) is a few modules with the short list of test files that
exercise them ("before": the suite as it was) and the new test files written to kill
their survivors ("after"). Per group, in its own scratch copy ``--workdir/<group>``:

1. copy ``manual_bp/``, ``reference/``, ``tests/`` and ``pyproject.toml`` *as committed*
   at ``--commit`` (``git archive``: other sessions' uncommitted edits are not measured);
   add a ``[tool.mutmut]`` section and a hypothesis profile ``mutation`` (no example
   database, no shrinking, derandomized: a mutant's failing example must not be replayed
   into another run, and shrinking a kill is wasted time);
2. "before": generate every mutant of the group's modules, run every ``--sample``-th;
3. "after": copy the group's new test files from the working tree and rerun the
   survivors with old + new tests (a superset of tests cannot revive a killed mutant);
4. write the generated part of ``--page`` (between the markers; the rest of the page is
   written by hand): date, command, commit, per-module table, every survivor with its
   diff and its triage from :mod:`triage`.

Resumable: ``<group>/state.json`` records every verdict as it is known; a rerun with the
same ``--workdir`` skips finished groups and runs only the mutants without a verdict.
``--budget-minutes`` stops the run (killing mutmut) when the wall-time budget is spent;
what ran is kept, and a rerun continues. ``--page-only`` regenerates the page from the
recorded states.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from page import ALIVE, DONE, _module_of, _score, page_section, write_page

ROOT = Path(__file__).resolve().parents[2]

#: group -> (modules, tests before, new tests after). Test lists are short on purpose:
#: mutmut runs, per mutant, only the listed tests that reach the mutated function.
SEQUENCE_TESTS = [
    "tests/test_blindspots_sequences.py",
    "tests/test_blindspots_layers.py",
    "tests/test_adjoint.py",
]
GROUPS: dict[str, tuple[list[str], list[str], list[str]]] = {
    # the first run (activations.py, costs.py, since split into packages); not rerun here
    "components": (
        [f"manual_bp/activations/{m}.py" for m in ("base", "normalising", "piecewise", "smooth")]
        + [f"manual_bp/costs/{m}.py" for m in ("base", "classification", "distribution")]
        + ["manual_bp/costs/regression.py"],
        ["tests/test_activations.py", "tests/test_costs.py"],
        ["tests/test_blindspots_components.py", "tests/test_adjoint.py"],
    ),
    "network": (
        ["manual_bp/models/network.py", "manual_bp/models/records.py"],
        ["tests/test_backprop.py", "tests/test_training.py", "tests/test_serialization.py"],
        ["tests/test_blindspots_model.py"],
    ),
    "fast": (
        ["manual_bp/training/fused.py", "manual_bp/layers/steps.py"],
        ["tests/test_fast_path.py", "tests/test_blindspots_fast.py", "tests/test_training.py"],
        ["tests/test_blindspots_model.py"],
    ),
    "sequential": (
        [f"manual_bp/models/{m}.py" for m in ("sequential", "parameters", "targets")],
        ["tests/test_stack.py", "tests/test_sequence_training.py"],
        ["tests/test_blindspots_model.py", "tests/test_adjoint.py"],
    ),
    "fast-layers": (
        [
            f"manual_bp/layers/{m}.py"
            for m in (
                "convolution_fast",
                "normalisation_fast",
                "pooling_fast",
                "attention_fast",
                "containers_fast",
                "recurrent_steps",
                "recurrent_fast",
            )
        ]
        + ["manual_bp/_threads.py"],
        [
            f"tests/test_fast_{m}.py"
            for m in (
                "convolution",
                "normalisation",
                "pooling",
                "attention",
                "residual",
                "recurrent",
                "sequence",
                "activation",
                "gelu",
            )
        ]
        + ["tests/test_threads.py"],
        ["tests/test_fast_path.py", "tests/test_blindspots_fast.py"],
    ),
    "layers-core": (
        [f"manual_bp/layers/{m}.py" for m in ("base", "dense", "containers", "activation")],
        ["tests/test_layers.py", "tests/test_stack.py", "tests/test_layer_products.py"],
        ["tests/test_blindspots_layers.py", "tests/test_adjoint.py"],
    ),
    "convolution": (
        [f"manual_bp/layers/{m}.py" for m in ("convolution", "convolution_transpose", "_im2col")],
        ["tests/test_convolution.py"],
        ["tests/test_blindspots_layers.py", "tests/test_adjoint.py"],
    ),
    "pooling": (
        ["manual_bp/layers/pooling.py"],
        ["tests/test_pooling.py"],
        ["tests/test_blindspots_layers.py", "tests/test_adjoint.py"],
    ),
    "normalisation": (
        ["manual_bp/layers/normalisation.py", "manual_bp/layers/dropout.py"],
        ["tests/test_normalisation.py", "tests/test_dropout.py"],
        ["tests/test_blindspots_layers.py", "tests/test_adjoint.py"],
    ),
    "recurrent": (
        [f"manual_bp/layers/{m}.py" for m in ("recurrent", "recurrent_cells", "recurrent_fast")]
        + ["manual_bp/layers/embedding.py"],
        ["tests/test_recurrent.py"],
        [
            "tests/test_blindspots_sequences.py",
            "tests/test_blindspots_layers.py",
            "tests/test_adjoint.py",
        ],
    ),
    "attention": (
        ["manual_bp/layers/attention.py"],
        ["tests/test_attention.py"],
        [
            "tests/test_blindspots_sequences.py",
            "tests/test_blindspots_layers.py",
            "tests/test_adjoint.py",
        ],
    ),
    "optimizers": (
        [f"manual_bp/optimizers/{m}.py" for m in ("base", "sgd", "adam", "rmsprop", "adagrad")]
        + ["manual_bp/optimizers/cli.py", "manual_bp/schedules.py", "manual_bp/regularizers.py"],
        ["tests/test_optimizers.py", "tests/test_blindspots_fast.py"],
        ["tests/test_blindspots_optim.py"],
    ),
    "initializers": (
        ["manual_bp/initializers.py"],
        ["tests/test_initializers.py"],
        ["tests/test_blindspots_optim.py"],
    ),
    "curvature": (
        [f"manual_bp/curvature/{m}.py" for m in ("chain", "diagonal", "eigen", "kfac")]
        + [f"manual_bp/curvature/{m}.py" for m in ("loss", "rop", "stats")],
        ["tests/test_curvature.py"],
        ["tests/test_blindspots_curvature.py"],
    ),
}

PROFILE = """# Added by tests/mutation/run_mutation.py (only in the scratch copy).
from hypothesis import Phase  # noqa: E402

settings.register_profile(
    "mutation",
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
_settings_init = settings.__init__


def _capped_init(self, parent=None, **kwargs):
    # A test's own @settings(max_examples=N) is capped at the profile's 10 (CPU budget).
    if "max_examples" in kwargs:
        kwargs["max_examples"] = min(kwargs["max_examples"], 10)
    _settings_init(self, parent, **kwargs)


settings.__init__ = _capped_init
"""


def _copy_tree(workdir: Path, commit: str) -> None:
    """The committed tree at ``commit`` (not the working tree) into ``workdir``."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    paths = ["manual_bp", "reference", "tests", "pyproject.toml"]
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, *paths],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(workdir, filter="data")
    conftest = workdir / "tests" / "conftest.py"
    text = conftest.read_text(encoding="utf-8")
    marker = "settings.load_profile("
    assert marker in text, "tests/conftest.py no longer loads a profile"
    conftest.write_text(text.replace(marker, PROFILE + marker, 1), encoding="utf-8")


def _configure(workdir: Path, modules: list[str], tests: list[str]) -> None:
    """Write the ``[tool.mutmut]`` section (replacing an earlier one) of the copy."""
    path = workdir / "pyproject.toml"
    text = path.read_text(encoding="utf-8").split("\n[tool.mutmut]")[0]
    section = (
        "\n[tool.mutmut]\n"
        'source_paths = ["manual_bp"]\n'
        f"only_mutate = {json.dumps(modules)}\n"
        'also_copy = ["reference"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-x", "-q"]\n'
        'process_isolation = "forkserver"\n'
    )
    path.write_text(text.rstrip("\n") + "\n" + section, encoding="utf-8")


def _mutmut(workdir: Path, names: list[str], max_children: int, deadline: float) -> bool:
    """Run mutmut on ``names``; False if the wall-time ``deadline`` stopped it."""
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": str(workdir)}
    # One thread per worker: an OpenMP pool inherited by fork() deadlocks the child
    # (torch), and such a worker is killed by the wall timeout and miscounted as killed.
    env |= {key: "1" for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run"]
    command += ["--max-children", str(max_children), *names]
    log = (workdir / "mutmut.log").open("a", encoding="utf-8")
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        process.wait(timeout=max(1.0, deadline - time.time()))
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        return False
    finally:
        log.close()


def _statuses(workdir: Path, modules: list[str]) -> dict[str, str]:
    """Mutant name -> status, from mutmut's ``.meta`` files."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for module in modules:
        meta = workdir / "mutants" / (module + ".meta")
        if meta.exists():
            codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
            out.update({name: status_by_exit_code[code] for name, code in codes.items()})
    return out


def run_group(name: str, args, deadline: float) -> dict:
    """Before and after phases of one group, resumable from ``<group>/state.json``."""
    modules, tests, new_tests = GROUPS[name]
    workdir = args.workdir / name
    path = workdir / "state.json"
    state = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if state is None:
        _copy_tree(workdir, args.commit)
        _configure(workdir, modules, tests)
        _mutmut(workdir, ["manual_bp.no_such_mutant*"], args.max_children, deadline)  # generate
        every = sorted(_statuses(workdir, modules))
        state = {"group": name, "commit": args.commit, "sample": args.sample}
        state |= {"generated": {m: 0 for m in modules}, "before": {}, "after": {}}
        for mutant in every:
            state["generated"][_module_of(mutant, modules)] += 1
        state["sampled"] = every[args.offset :: args.sample]
        state["samples"] = [[args.sample, args.offset]]
        path.write_text(json.dumps(state, indent=1), encoding="utf-8")
    elif args.extend and [args.sample, args.offset] not in state.setdefault(
        "samples", [[state["sample"], 0]]
    ):
        # a denser sample: add every k-th mutant from another offset (verdicts are kept)
        every = sorted(_statuses(workdir, modules))
        state["sampled"] = sorted(set(state["sampled"]) | set(every[args.offset :: args.sample]))
        state["samples"].append([args.sample, args.offset])
        path.write_text(json.dumps(state, indent=1), encoding="utf-8")

    def save(phase: str, names: list[str]) -> None:
        statuses = _statuses(workdir, modules)
        state[phase].update({n: statuses[n] for n in names if statuses.get(n) in DONE})
        path.write_text(json.dumps(state, indent=1), encoding="utf-8")

    save("before", [n for n in state["sampled"] if n not in state["before"]])  # a resumed run
    todo = [n for n in state["sampled"] if n not in state["before"]]
    if todo and time.time() < deadline:
        _configure(workdir, modules, tests)
        _mutmut(workdir, todo, args.max_children, deadline)
        save("before", todo)
    alive = [n for n, s in state["before"].items() if s in ALIVE and n not in state["after"]]
    if args.after and alive and len(state["before"]) == len(state["sampled"]):
        present = [t for t in new_tests if (ROOT / t).exists()]
        if not present:
            return state
        for test in present:
            shutil.copy2(ROOT / test, workdir / test)
        state["new_tests"] = present
        _configure(workdir, modules, tests + present)
        _mutmut(workdir, alive, args.max_children, deadline)
        save("after", alive)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", nargs="+", default=["all"], help=f"all or of {list(GROUPS)}")
    parser.add_argument("--sample", type=int, default=15, help="run every k-th mutant")
    parser.add_argument("--offset", type=int, default=0, help="start of the k-th sample")
    parser.add_argument(
        "--extend", action="store_true", help="add every --sample-th from --offset to a group"
    )
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--budget-minutes", type=float, default=80.0)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--after", action="store_true", help="rerun survivors with new tests")
    parser.add_argument("--page-only", action="store_true")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "manual_bp_mutation"
    )
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "mutation.md")
    args = parser.parse_args(argv)
    args.commit = subprocess.run(
        ["git", "rev-parse", args.commit], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    command = "python tests/mutation/run_mutation.py " + " ".join(argv or sys.argv[1:])
    command = command.replace(str(args.workdir), "<scratch directory>")
    names = [g for g in GROUPS if g != "components"] if args.groups == ["all"] else args.groups
    deadline = time.time() + 60 * args.budget_minutes
    states = []
    for name in names:
        path = args.workdir / name / "state.json"
        if args.page_only:
            if path.exists():
                states.append(json.loads(path.read_text(encoding="utf-8")))
            continue
        state = run_group(name, args, deadline)
        states.append(state)
        print(f"{name}: before {_score(state['before'])}, after phase {len(state['after'])}")
    write_page(args.page, page_section(states, args, command, GROUPS))
    print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
