"""The ``verify`` command and runner (manual_bp.verify) and the generated equation index."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from manual_bp import verify
from manual_bp.cli import main
from manual_bp.equations import EQUATIONS
from reference.compare import Comparison

ROOT = Path(__file__).resolve().parent.parent


def test_equation_index_is_up_to_date():
    """docs/equations.md is generated from the registry and docs/verification.json.

    Stale after an equation is added or changed: regenerate with
    ``python -m manual_bp verify --figures docs/verification.json --pages docs/equations.md``.
    """
    figures = verify.read_figures(ROOT / "docs/verification.json")
    expected = verify.equations_page(figures)
    actual = (ROOT / "docs/equations.md").read_text(encoding="utf-8")
    assert actual == expected, f"docs/equations.md is stale; run: {verify.REGENERATE_PAGES}"


def test_equation_index_links_code_test_and_figure():
    page = verify.equations_page({"summary": "s", "equations": []})
    for equation in EQUATIONS.values():
        assert f'<a id="{equation.id}"></a>' in page
        assert f"`{equation.code}`" in page and equation.test in page
        assert f"({equation.doc_file.removeprefix('docs/')}#{equation.anchor})" in page


def test_committed_report_covers_the_registry():
    """docs/verification.json names every registered ID (else regenerate the report)."""
    figures = verify.read_figures(ROOT / "docs/verification.json")
    reported = {e["id"] for e in figures["equations"]}
    assert set(EQUATIONS) <= reported, f"not in the report: {sorted(set(EQUATIONS) - reported)}"


def _fake_checks(wrong: bool = False):
    """Checks without torch: BP3 as a mean of rows, optionally off by a factor."""

    def good(rng):
        d = rng.standard_normal((4, 3))
        return [Comparison("BP3", "∂C/∂b", d.mean(0), d.sum(0) / 4, oracle="torch")]

    def bad(rng):
        d = rng.standard_normal((4, 3))
        return [Comparison("BP3", "∂C/∂b", d.sum(0), d.sum(0) / 4)]

    def misshapen(rng):
        return [Comparison("BP4", "∂C/∂W", np.ones((2, 3)), np.ones((3, 2)))]

    def unknown(rng):
        return [Comparison("NOT.AN.ID", "x", np.ones(2), np.ones(2))]

    checks = {"good": good}
    if wrong:
        checks.update(bad=bad, misshapen=misshapen, unknown=unknown)
    return checks


def test_runner_tabulates_errors_and_coverage():
    report = verify.run_verification(cases=3, only="BP3", checks=_fake_checks(), progress=False)
    assert report.passed
    result = report.results["BP3"]
    assert result.cases == 3 and result.comparisons == 3 and result.failures == 0
    assert result.worst["torch"] < 1e-15
    assert "BP3" in report.to_text() and "all passed" in report.summary()
    data = json.loads(report.to_json())
    assert data["versions"]["numpy"] == np.__version__ and data["cases"] == 3
    markdown = report.to_markdown(ROOT / "docs/verification.md")
    assert "| `BP3` |" in markdown and "(backprop.md#BP3)" in markdown


def test_text_table_explains_its_columns():
    """The terminal table has a legend: a reader meets Δ/bound without the Markdown report."""
    text = verify.run_verification(cases=2, only="BP3", checks=_fake_checks(), progress=False)
    text = text.to_text()
    assert "Δ/bound: worst |Δ|/bound" in text and "passes when it is" in text
    assert "vs torch, vs FD, other: worst normalised error" in text


def test_torch_kernel_notes_do_not_reach_stderr(capsys):
    """torch's C++ notes ("Triggered internally at …") about its own kernels are not
    findings; a warning of any other kind still surfaces."""
    import warnings

    def noisy(rng):
        warnings.warn("Using padding='same' with even kernel lengths may require a "
                      "zero-padded copy (Triggered internally at Convolution.cpp:1101.)",
                      UserWarning, stacklevel=1)  # fmt: skip
        return _fake_checks()["good"](rng)

    verify.run_verification(cases=2, only="BP3", checks={"noisy": noisy}, progress=False)
    assert capsys.readouterr().err == ""

    def other(rng):
        warnings.warn("something else", UserWarning, stacklevel=1)
        return _fake_checks()["good"](rng)

    with pytest.warns(UserWarning, match="something else"):
        verify.run_verification(cases=1, only="BP3", checks={"other": other}, progress=False)


def _walk(**counts):
    summary = {"configurations": 5, "classes": 2, "agree": 4, "disagree": 0, "refused": 1,
               "crash": 0, "excluded": 0, "worst_agreement": 2e-15, "tolerance": 1e-10,
               "by_source": {"module_db": {"agree": 4, "refused": 1}},
               "by_class": {"Conv2d": {"agree": 3, "refused": 1},
                            "ReLU": {"agree": 1}}}  # fmt: skip
    summary.update(counts)
    return lambda: summary


def test_report_cites_torchs_module_tests():
    """The counts of torch's own module tests (configurations, per outcome, per class) are
    in every form of the report; a refusal is a known gap, a disagreement or crash fails."""
    run = verify.run_verification
    report = run(cases=2, only="BP3", checks=_fake_checks(), progress=False, module_walk=_walk())
    assert report.passed
    line = "torch's own module tests: 5 configurations of 2 module classes: 4 agree, 1 refused"
    assert line in report.to_text()
    markdown = report.to_markdown(ROOT / "docs/verification.md")
    assert (
        "## torch's own module tests" in markdown and "| `Conv2d` | 3 | 0 | 1 | 0 | 0 |" in markdown
    )
    assert json.loads(report.to_json())["torch_module_tests"]["refused"] == 1
    for bad in ({"disagree": 1}, {"crash": 2}):
        failed = run(cases=2, only="BP3", checks=_fake_checks(), progress=False,
                     module_walk=_walk(**bad))  # fmt: skip
        assert not failed.passed and "TORCH MODULE TESTS" in failed.to_text()


def test_summary_headline_is_relative_to_the_bound():
    """A passing comparison against an exact-zero reference has an absurd normalised error
    max|Δ|/max|g_ref| (the report's old headline showed 4.3e+19); the headline cites the
    error relative to its bound — the pass/fail normalisation — so a pass reads ≤ 1."""

    def zero_reference(rng):
        d = rng.standard_normal(3)
        tiny = 1e-17 * rng.standard_normal(3)  # rounding noise against a (nearly) zero reference
        return [
            Comparison("BP3", "∂C/∂b", d.mean() + 0 * d, d.sum() / 3 + 0 * d, oracle="torch"),
            Comparison("BP4", "∂C/∂W", tiny, 1e-30 * d, scale=np.ones(3), oracle="torch"),
            Comparison("BP4", "∂C/∂W", 0.5 * d, 0.5 * d * (1 + 1e-14), oracle="finite-differences"),
        ]

    report = verify.run_verification(
        cases=3, only="BP3,BP4", checks={"zero": zero_reference}, progress=False
    )
    assert report.passed and report.results["BP4"].worst["torch"] > 1e10  # absurd
    summary = report.summary()
    torch_ratio, torch_id = report.worst_ratio("torch")
    overall, overall_id = report.worst_ratio()
    assert torch_ratio <= 1 and overall <= 1 and overall >= torch_ratio
    assert f"relative to its bound vs torch {torch_ratio:.2f} ({torch_id})" in summary
    assert f"over all oracles {overall:.2f} ({overall_id})" in summary
    assert "inf" not in summary and "e+" not in summary
    assert report.to_dict()["equations"][1]["worst_bound_ratio_by_oracle"]["torch"] <= 1


def test_runner_reports_failures_missing_and_unregistered():
    report = verify.run_verification(cases=2, checks=_fake_checks(wrong=True), progress=False)
    assert not report.passed
    assert report.failed == ["BP3", "BP4"] and report.results["BP3"].failures == 2
    assert "check 'bad' case 0 (seed 0)" in report.results["BP3"].first_failure
    assert "shape (2, 3) differs" in report.results["BP4"].first_failure
    assert report.results["BP4"].worst_ratio == np.inf
    assert "BP2" in report.missing and "BP3" not in report.missing
    assert report.unregistered == ["NOT.AN.ID"]
    text = report.to_text()
    assert "FAIL BP3" in text and "NOT COVERED" in text and "NOT REGISTERED" in text


def test_runner_reports_crashing_checks():
    def crash(rng):
        raise RuntimeError("boom")

    report = verify.run_verification(
        cases=1, only="BP3", checks={"good": _fake_checks()["good"], "crash": crash}, progress=False
    )
    assert not report.passed and "RuntimeError: boom" in report.check_errors[0]


def test_cases_are_reproducible_per_check():
    a = verify.case_rng(0, "network", 5).standard_normal(3)
    np.testing.assert_array_equal(a, verify.case_rng(0, "network", 5).standard_normal(3))
    assert not np.array_equal(a, verify.case_rng(0, "other", 5).standard_normal(3))


def test_runner_reports_a_case_that_does_not_rerun_alike():
    """A check drawing outside its generator (here a module-level one; in a report, an
    unseeded layer) is reported: its case 0 drawn again after the others differs."""
    outside = np.random.default_rng(1)

    def leaky(rng):
        d = rng.standard_normal(3) + outside.standard_normal(3)
        return [Comparison("BP3", "∂C/∂b", d, d.copy(), oracle="torch")]

    checks = {"good": _fake_checks()["good"], "leaky": leaky}
    report = verify.run_verification(cases=2, only="BP3", checks=checks, progress=False)
    assert not report.passed and len(report.check_errors) == 1
    assert "check 'leaky' case 0 (seed 0): not reproducible" in report.check_errors[0]


def _counting_checks(calls):
    """Checks that log their calls: ``bp3`` and ``new`` produce BP3, ``bp4`` BP4."""

    def make(name, equation):
        def check(rng):
            calls.append(name)
            d = rng.standard_normal(3)
            return [Comparison(equation, "g", d, d.copy(), oracle="torch")]

        return check

    return {"bp3": make("bp3", "BP3"), "bp4": make("bp4", "BP4"), "new": make("new", "BP3")}


def test_only_selects_the_checks_before_running_them():
    """``--only`` runs the checks the recorded run saw produce a matching ID (in full) and
    probes only checks the record does not know; a check of other IDs is never called."""
    calls = []
    by_id = {i: ["bp4"] for i in EQUATIONS}
    by_id["BP3"] = ["bp3"]
    coverage = (by_id, {"bp3", "bp4"})  # "new": registered after the recorded run
    cases = verify.PROBE_CASES + 5
    report = verify.run_verification(
        cases=cases, only="BP3", checks=_counting_checks(calls), progress=False, coverage=coverage
    )
    assert "bp4" not in calls
    # the new one proved relevant; each relevant check draws its case 0 again at the end
    assert calls.count("bp3") == calls.count("new") == cases + 1
    assert report.checks == {"bp3": cases, "new": cases} and report.passed
    assert report.results["BP3"].checks == ["bp3", "new"]


def test_only_probes_every_check_for_an_id_the_record_lacks():
    """A matching ID no recorded check produced (new): no record says which check makes
    it, so every check is probed (:data:`PROBE_CASES` cases) as before."""
    calls = []
    by_id = {i: ["bp4"] for i in EQUATIONS if i != "BP3"}
    cases = verify.PROBE_CASES + 5
    report = verify.run_verification(
        cases=cases, only="BP3", checks=_counting_checks(calls), progress=False,
        coverage=(by_id, {"bp3", "bp4", "new"}),
    )  # fmt: skip
    assert calls.count("bp4") == verify.PROBE_CASES
    assert calls.count("bp3") == calls.count("new") == cases + 1  # + case 0 drawn again
    assert report.results["BP3"].cases == 2 * cases


def test_recorded_coverage_reads_a_full_report_only(tmp_path):
    """The committed full report names checks per ID; a partial (``only``) or unreadable
    report records nothing (every check is then probed)."""
    by_id, ran = verify.recorded_coverage()
    assert "LAYER.dense" in by_id and set(by_id["LAYER.dense"]) <= ran
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"only": "BP3", "checks": {"a": 1},
                                   "equations": [{"id": "BP3", "checks": ["a"]}]}))  # fmt: skip
    assert verify.recorded_coverage(partial) == ({}, set())
    assert verify.recorded_coverage(tmp_path / "absent.json") == ({}, set())
    (tmp_path / "bad.json").write_text("{")
    assert verify.recorded_coverage(tmp_path / "bad.json") == ({}, set())


def test_bad_options():
    with pytest.raises(ValueError, match="matches no registered equation ID"):
        verify.run_verification(cases=1, only="NOPE*", checks={}, progress=False)
    with pytest.raises(ValueError, match="positive integer"):
        verify.run_verification(cases=0, checks={}, progress=False)


def test_command_runs_real_checks(capsys, tmp_path):
    """LAYER.dense and OPT.sgd against torch, end to end through the CLI."""
    report, data = tmp_path / "v.md", tmp_path / "v.json"
    options = ["--only", "LAYER.dense,OPT.sgd", "--cases", "3", "--no-progress"]
    status = main(["verify", *options, "--report", str(report), "--json", str(data)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "LAYER.dense" in out and "all passed" in out
    results = {e["id"]: e for e in json.loads(data.read_text())["equations"]}
    # Several checks exercise LAYER.dense (its own, and every stack a dense layer sits in):
    # 3 cases from each of them.
    cases = results["LAYER.dense"]["cases"]
    assert cases >= 3 and cases % 3 == 0 and results["OPT.sgd"]["passed"]
    assert "verified against torch" in report.read_text()


def test_without_torch_says_how_to_install():
    """Importing manual_bp.verify needs no torch; running it without torch explains the fix."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import manual_bp.verify\n"
        "assert 'reference.checks' not in sys.modules\n"
        "from manual_bp.cli import main\n"
        "sys.exit(main(['verify', '--quick', '--no-progress']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert 'pip install -e ".[test]" -c constraints.txt' in done.stderr


#: The quick verification in shards, one test each, so the suite's two workers share it
#: (one test of ~11 CPU minutes held one worker to the end of the run). Checks are dealt
#: round-robin in registry order: neighbours (a module's encoder, decoder and whole-model
#: products) land in different shards.
QUICK_SHARDS = 8


def _quick_shard(index: int) -> dict:
    checks = verify.load_checks()
    return {
        name: check for k, (name, check) in enumerate(checks.items()) if k % QUICK_SHARDS == index
    }


@pytest.mark.slow
@pytest.mark.long_first
@pytest.mark.parametrize("shard", range(QUICK_SHARDS))
def test_quick_verification_passes_and_covers_its_equations(shard):
    """``verify --quick``'s cases in CI, one shard of the checks: every comparison within
    its bound, no check error, no unregistered ID; an ID the committed full report saw
    produced by checks of this shard only is produced here too, and a check new since that
    report produces at least one ID. With :func:`test_committed_report_covers_the_registry`
    (every registered ID has a check in that report) every registered ID gets cases; an ID
    whose checks are in several shards is covered by the full report's 500 cases (the quick
    run's 100 need not draw it from each)."""
    checks = _quick_shard(shard)
    by_id, ran = verify.recorded_coverage(ROOT / "docs/verification.json")
    report = verify.run_verification(
        cases=verify.QUICK_CASES, checks=checks, progress=False, coverage=(by_id, ran)
    )
    assert not report.check_errors, report.check_errors
    assert not report.unregistered, f"checked IDs absent from the registry: {report.unregistered}"
    failed = [r.id for r in report.results.values() if r.failures]
    assert not failed, "\n".join(report._problems())
    produced = {r.id for r in report.results.values() if r.cases}
    ours = {i for i, names in by_id.items() if names and set(names) <= set(checks)}
    lost = sorted(ours - produced)
    assert not lost, f"IDs only this shard's checks produce, not produced: {lost}"
    for name in set(checks) - ran:
        assert any(name in r.checks for r in report.results.values()), (
            f"new check {name!r} produces no registered equation ID"
        )


def test_quick_shards_hold_every_check_once():
    names = [name for k in range(QUICK_SHARDS) for name in _quick_shard(k)]
    assert sorted(names) == sorted(verify.load_checks())


def test_the_report_carries_the_module_walk(torch_module_outcomes):
    """The report's torch module walk is :func:`reference.torch_modules.summary` of the
    session's one walk (the full run's figures: ``docs/verification.md``)."""
    from manual_bp.verify_modules import module_tests_problems
    from reference import torch_modules

    def walk():
        return {
            **torch_modules.summary(torch_module_outcomes),
            **torch_modules.module_db_coverage(),
        }

    first = next(iter(verify.load_checks().items()))
    report = verify.run_verification(
        cases=1, checks=dict([first]), progress=False, module_walk=walk
    )
    assert report.module_tests["configurations"] == len(torch_module_outcomes) > 0
    assert "## torch's own module tests" in report.to_markdown()
    assert not module_tests_problems(report.module_tests)


def _github_slug(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _anchors(markdown: Path) -> set[str]:
    text = markdown.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.MULTILINE)
    return ids | {_github_slug(h) for h in headings}


@pytest.mark.parametrize("page", ["docs/equations.md", "docs/verification.md"])
def test_generated_pages_have_no_broken_links(page):
    """Every relative link of the generated pages reaches a file, and an anchor in it."""
    source = ROOT / page
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        resolved = (source.parent / path).resolve() if path else source
        missing_anchor = anchor and resolved.suffix == ".md" and resolved.exists()
        if not resolved.exists() or (missing_anchor and anchor not in _anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page}: broken links {sorted(set(broken))}"
