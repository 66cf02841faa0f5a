"""The command line as a careless or hostile user meets it (issue 14; contract: docs/cli.md).

Behaviour classes, each parametrised over every subcommand and every flag it concerns:

* :class:`TestInputFiles` — every flag that reads a file, given a missing file, a directory,
  an empty, non-UTF-8, deeply nested, truncated file, a file of the wrong suffix or the
  wrong kind: exit 2 and one line naming the file and the true cause.
* :class:`TestDataDirectories` — ``--mnist DIR`` of ``train`` and ``evaluate``: a missing
  directory, a file, an IDX file of the wrong role, a directory or raw data where a gzip
  file is expected.
* :class:`TestOutputPaths` — every flag that writes a file: an existing directory at the
  target, a missing parent, a parent that is a file, an unwritable directory, a wrong
  suffix or image format, two flags naming one file, matplotlib missing — refused before
  any data is loaded, any training or verification starts, and nothing created.
* :class:`TestBadFlagValues` — every option of every subcommand given hostile values:
  never a traceback or an internal error; a refusal is one line with exit 2.
* :class:`TestFailures` — divergence on every training path, out of memory, a full disk:
  exit 1 with one line; an unexpected exception: exit 1, one line, no traceback.
* :class:`TestWrittenFiles` — every writer gives a new file the umask's mode and keeps an
  existing file's mode; the outputs of the commands are well formed.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual_bp.commands.train as train_command
from manual_bp import verify
from manual_bp.cli import main
from manual_bp.data import MNIST_FILES
from manual_bp.idx_files import IMAGES_MAGIC, LABELS_MAGIC
from manual_bp.models.network import Network
from manual_bp.serialization import save

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- helpers
def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``main(argv)`` in-process: ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, command: str, *fragments: str, kind: str = "error") -> str:
    """stderr is one line ``manual-bp COMMAND: KIND: ...`` holding every fragment."""
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"manual-bp {command}: {kind}: "), err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert "allow_pickle" not in lines[0]  # never a hint to load a file unsafely
    return lines[0]


def listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """Valid files of every kind a flag reads: saved models, a spec, a verification JSON."""
    directory = tmp_path_factory.mktemp("valid")
    net = Network([64, 8, 10], seed=0)
    files = {
        "net.json": save(net, directory / "net.json"),
        "net.npz": save(net, directory / "net.npz"),
        "spec.json": directory / "spec.json",
        "spec.toml": directory / "spec.toml",
        "figures.json": directory / "figures.json",
    }
    files["spec.json"].write_text('{"layers": ["dense", "sigmoid"]}')
    files["spec.toml"].write_text('layers = ["dense", "sigmoid"]\n')
    files["figures.json"].write_text(json.dumps({"summary": "s", "equations": []}))
    return files


# ---------------------------------------------------------------------- input files
#: Every flag that reads a file: (id, command, argv before the path, argv after, suffix).
INPUT_FLAGS = [
    ("evaluate FILE.json", "evaluate", [], [], ".json"),
    ("evaluate FILE.npz", "evaluate", [], [], ".npz"),
    ("train --model FILE.json", "train", ["--quiet", "--epochs", "1", "--model"], [], ".json"),
    ("train --model FILE.toml", "train", ["--quiet", "--epochs", "1", "--model"], [], ".toml"),
    ("verify --figures FILE", "verify", ["--figures"], ["--pages", "{tmp}/out.md"], ".json"),
]

#: What each flag's file is, and a valid file of another kind to give it instead.
WRONG_KIND = {".json": "spec.json", ".npz": "net.npz", ".toml": "spec.toml"}


def _hostile_file(kind: str, directory: Path, suffix: str, saved: dict[str, Path]) -> Path:
    path = directory / f"input{suffix}"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "non-UTF-8":
        path.write_bytes(b"\xff\xfe\x00{\x93garbage")
    elif kind == "deeply nested":
        path.write_text("[" * 100_000 + "]" * 100_000 if suffix != ".toml" else "a = " + "[" * 5000)
    elif kind == "JSON renamed":
        path.write_text('{"layers": ["dense"], "sizes": [1, 2]}')
    elif kind == "truncated":
        source = saved["net.npz" if suffix == ".npz" else "net.json"]
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif kind == "wrong suffix":
        path = directory / "input.txt"
        path.write_text("{}")
    elif kind == "parent is a file":
        (directory / "file").write_text("x")
        path = directory / "file" / f"input{suffix}"
    return path


#: kind -> fragment of the message that names the cause (``None``: just one line).
INPUT_CAUSES = {
    "missing": "no such",
    "directory": "is a directory",
    "empty": "empty file",
    "non-UTF-8": None,  # per format: "not a UTF-8" for text, "not an .npz archive" for npz
    "deeply nested": None,  # "nested too deeply" (JSON); TOML: a parse error
    "JSON renamed": None,  # .npz: "not an .npz archive ... JSON"; text formats: wrong kind
    "truncated": None,  # "corrupt"
    "wrong suffix": "unsupported file type '.txt'",
    "parent is a file": "is not a directory",
}

SPECIFIC_CAUSES = {
    ("non-UTF-8", ".json"): "not a UTF-8",
    ("non-UTF-8", ".toml"): "not a UTF-8",
    ("non-UTF-8", ".npz"): "not an .npz archive",
    ("deeply nested", ".json"): "nested too deeply",
    ("deeply nested", ".npz"): "not an .npz archive",
    ("JSON renamed", ".npz"): "not an .npz archive (a zip file): it is JSON",
    ("truncated", ".json"): "corrupt JSON",
    ("deeply nested", ".toml"): "nested too deeply",
    ("truncated", ".npz"): "corrupt .npz file",
}


class TestInputFiles:
    """Every flag that reads a file, every way the file can be wrong: exit 2, one line."""

    @pytest.mark.parametrize("kind", list(INPUT_CAUSES))
    @pytest.mark.parametrize("flag", INPUT_FLAGS, ids=[f[0] for f in INPUT_FLAGS])
    def test_hostile_file_is_one_line_naming_file_and_cause(
        self, flag, kind, tmp_path, saved, capsys
    ):
        _, command, before, after, suffix = flag
        path = _hostile_file(kind, tmp_path, suffix, saved)
        before_run = listing(tmp_path)
        after = [a.replace("{tmp}", str(tmp_path)) for a in after]
        code, out, err = run([command, *before, path, *after], capsys)
        assert code == 2, err
        cause = SPECIFIC_CAUSES.get((kind, suffix), INPUT_CAUSES[kind])
        assert_one_line(err, command, str(path), *([cause] if cause else []))
        assert listing(tmp_path) == before_run  # nothing written, no directory created
        assert out == ""

    @pytest.mark.parametrize("flag", INPUT_FLAGS, ids=[f[0] for f in INPUT_FLAGS])
    def test_a_valid_file_of_another_kind_is_named_as_such(self, flag, tmp_path, saved, capsys):
        """A spec to evaluate, a saved model as --model, a saved model as --figures."""
        _, command, before, after, suffix = flag
        wrong = {"evaluate": WRONG_KIND, "train": {".json": "net.json"}}.get(command, {})
        source = saved[wrong.get(suffix, "net.json")]
        if command == "train" and suffix == ".toml":
            pytest.skip("a saved model is never TOML")
        if command == "evaluate" and suffix == ".npz":
            source = saved["figures.json"]  # a JSON file named .npz
        path = tmp_path / f"other{suffix}"
        path.write_bytes(source.read_bytes())
        after = [a.replace("{tmp}", str(tmp_path)) for a in after]
        code, _, err = run([command, *before, path, *after], capsys)
        assert code == 2, err
        expected = {
            ("evaluate", ".json"): "not a manual_bp model file",
            ("evaluate", ".npz"): "not an .npz archive",
            ("train", ".json"): "is a saved model (manual_bp.model), not a model spec",
            ("verify", ".json"): "not a verification JSON",
        }[command, suffix]
        assert_one_line(err, command, str(path), expected)

    @pytest.mark.parametrize(
        "document, cause",
        [
            ([1], "expected a JSON object"),
            ({"equations": [{"id": 5}]}, "no 'summary'"),
            ({"summary": "s", "equations": 5}, "no 'equations' list"),
            ({"summary": "s", "equations": [{"id": "BP1"}]}, "no integer 'cases'"),
            ({"summary": "s", "equations": [{"id": "BP1", "cases": 1, "worst": 3}]}, "'worst'"),
            (
                {"summary": "s", "equations": [{"id": "BP1", "cases": 1, "worst": {"t": "x"}}]},
                "non-numeric 'worst'",
            ),
        ],
    )
    def test_figures_of_the_wrong_shape(self, document, cause, tmp_path, capsys):
        path = tmp_path / "figures.json"
        path.write_text(json.dumps(document))
        code, _, err = run(["verify", "--figures", path, "--pages", tmp_path / "o.md"], capsys)
        assert code == 2
        assert_one_line(err, "verify", str(path), "not a verification JSON", cause)
        assert not (tmp_path / "o.md").exists()

    @pytest.mark.parametrize("suffix", [".json", ".npz"])
    def test_float32_overflow_in_a_saved_file_is_refused(self, suffix, tmp_path, capsys):
        """float64 values beyond float32's range would load as inf: refused by evaluate."""
        net = Network([64, 3, 10], seed=0, dtype="float32")
        path = save(net, tmp_path / f"net{suffix}")
        if suffix == ".json":
            document = json.loads(path.read_text())
            document["parameters"]["0.weight"][1][2] = 1e300
            path.write_text(json.dumps(document))
        else:
            with np.load(path) as archive:
                arrays = {k: archive[k] for k in archive.files}
            key = "param:0.weight"
            arrays[key] = arrays[key].astype(np.float64)
            arrays[key][1, 2] = 1e300
            np.savez(path, **arrays)
        code, _, err = run(["evaluate", path], capsys)
        assert code == 2
        assert_one_line(err, "evaluate", str(path), "0.weight", "(1, 2)", "overflows float32")


# ---------------------------------------------------------------------- data directories
def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _mnist(directory: Path) -> Path:
    """A tiny MNIST directory (12 training, 5 test images) in the canonical layout."""
    rng = np.random.default_rng(0)
    directory.mkdir(exist_ok=True)
    for split, n in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, (n, 28, 28))
        labels = rng.integers(0, 10, n)
        for role, array, magic in (("images", images, IMAGES_MAGIC), ("labels", labels, 2049)):
            path = directory / f"{MNIST_FILES[f'{split}_{role}']}.gz"
            path.write_bytes(gzip.compress(_idx(array, magic)))
    return directory


def _break_mnist(kind: str, directory: Path) -> tuple[Path, str]:
    """Apply ``kind`` to a tiny MNIST directory; return the path at fault and the cause."""
    labels = directory / f"{MNIST_FILES['train_labels']}.gz"
    if kind == "missing directory":
        return directory / "nowhere", "MNIST directory does not exist"
    if kind == "a file, not a directory":
        return labels, "is a file, not the MNIST directory"
    if kind == "missing file":
        labels.unlink()
        return directory / MNIST_FILES["train_labels"], "MNIST file is missing"
    if kind == "directory for a file":
        labels.unlink()
        labels.mkdir()
        return labels, "is a directory, not an MNIST IDX file"
    if kind == "images magic in a labels file":  # a labels-sized payload: not "truncated"
        labels.write_bytes(gzip.compress(_idx(np.zeros((12, 1, 1)), IMAGES_MAGIC)))
        return labels, f"holds images (IDX magic {IMAGES_MAGIC}), expected labels"
    if kind == "labels magic in an images file":
        images = directory / f"{MNIST_FILES['test_images']}.gz"
        images.write_bytes(gzip.compress(_idx(np.zeros(5), LABELS_MAGIC)))
        return images, f"holds labels (IDX magic {LABELS_MAGIC}), expected images"
    if kind == "raw data named .gz":
        labels.write_bytes(gzip.decompress(labels.read_bytes()))
        return labels, "not gzip data (it is a raw IDX file: drop the .gz)"
    if kind == "gzip data named raw":
        raw = directory / MNIST_FILES["train_labels"]
        labels.rename(raw)
        return raw, "gzip-compressed: name it .gz"
    if kind == "empty file":
        labels.write_bytes(gzip.compress(b""))
        return labels, "empty file"
    if kind == "truncated gzip":
        labels.write_bytes(labels.read_bytes()[:-10])
        return labels, "corrupt or truncated gzip data"
    raise AssertionError(kind)


MNIST_KINDS = [
    "missing directory",
    "a file, not a directory",
    "missing file",
    "directory for a file",
    "images magic in a labels file",
    "labels magic in an images file",
    "raw data named .gz",
    "gzip data named raw",
    "empty file",
    "truncated gzip",
]


class TestDataDirectories:
    """``--mnist DIR`` of every command that takes it: exit 2, the file and the cause."""

    @pytest.mark.parametrize("kind", MNIST_KINDS)
    @pytest.mark.parametrize("command", ["train", "evaluate"])
    def test_broken_mnist_directory(self, command, kind, tmp_path, saved, capsys, monkeypatch):
        directory = _mnist(tmp_path / "mnist")
        at_fault, cause = _break_mnist(kind, directory)
        target = directory if kind != "missing directory" and "not a dir" not in kind else at_fault
        # The tiny files are not the 60 000 / 10 000 of real MNIST: accept any counts.
        import manual_bp.data as data

        original = data.load_mnist
        monkeypatch.setattr(
            data, "load_mnist", lambda d, **kw: original(d, counts=None, validation_size=4, **kw)
        )
        argv = ["train", "--quiet", "--epochs", "1"] if command == "train" else ["evaluate"]
        argv += [saved["net.json"]] if command == "evaluate" else []
        code, _, err = run([*argv, "--mnist", target], capsys)
        assert code == 2, err
        assert_one_line(err, command, str(at_fault), cause)
        assert "truncated" not in err or "truncated" in cause


# ---------------------------------------------------------------------- output paths
class WorkStartedError(Exception):
    """Raised by the spies below: long work began although an output path was bad."""


@pytest.fixture
def no_work(monkeypatch):
    """Make any data loading, training or verification fail loudly (and be recorded)."""
    import manual_bp.data as data

    started = []

    def spy(name):
        def started_work(*args, **kwargs):
            started.append(name)
            raise WorkStartedError(name)

        return started_work

    for name in ("load_digits", "load_mnist"):
        monkeypatch.setattr(data, name, spy(name))
    monkeypatch.setattr(train_command, "train", spy("train"))
    monkeypatch.setattr(verify, "run_verification", spy("run_verification"))
    monkeypatch.setattr(verify, "equations_page", spy("equations_page"))
    return started


#: Every flag that writes a file: (id, command, argv before the path, argv after, suffix).
OUTPUT_FLAGS = [
    ("train --save .json", "train", ["--quiet", "--save"], [], ".json"),
    ("train --save .npz", "train", ["--quiet", "--save"], [], ".npz"),
    ("train --plot", "train", ["--quiet", "--plot"], [], ".png"),
    ("verify --report", "verify", ["--quick", "--report"], [], ".md"),
    ("verify --json", "verify", ["--quick", "--json"], [], ".json"),
    ("verify --pages", "verify", ["--quick", "--pages"], [], ".md"),
    ("verify --figures --pages", "verify", ["--pages"], ["--figures", "{figures}"], ".md"),
]

OUTPUT_PROBLEMS = {
    "existing directory": "is a directory; give a file name",
    "missing parent": "does not exist",
    "parent is a file": "is not a directory",
    "unwritable directory": "permission denied",
    "wrong suffix": "",  # per flag: unsupported file type / not an image format
    "no suffix": "",
}


def _bad_output(problem: str, directory: Path, suffix: str, monkeypatch) -> Path:
    path = directory / f"out{suffix}"
    if problem == "existing directory":
        path.mkdir()
    elif problem == "missing parent":
        path = directory / "nowhere" / "deeper" / f"out{suffix}"
    elif problem == "parent is a file":
        (directory / "file").write_text("x")
        path = directory / "file" / f"out{suffix}"
    elif problem == "unwritable directory":
        # Root may write anywhere, so the permission is denied by os.access itself.
        import manual_bp._files as files

        real = os.access
        monkeypatch.setattr(
            files.os, "access", lambda p, mode: False if mode & os.W_OK else real(p, mode)
        )
    elif problem == "wrong suffix":
        path = directory / "out.xyz"
    elif problem == "no suffix":
        path = directory / "out"
    return path


class TestOutputPaths:
    """Every output flag, every way its path can be wrong: refused before any work."""

    @pytest.mark.parametrize("problem", list(OUTPUT_PROBLEMS))
    @pytest.mark.parametrize("flag", OUTPUT_FLAGS, ids=[f[0] for f in OUTPUT_FLAGS])
    def test_bad_output_path_fails_before_work(
        self, flag, problem, tmp_path, saved, no_work, capsys, monkeypatch
    ):
        _, command, before, after, suffix = flag
        after = [a.replace("{figures}", str(saved["figures.json"])) for a in after]
        path = _bad_output(problem, tmp_path, suffix, monkeypatch)
        before_run = listing(tmp_path)
        code, out, err = run([command, *before, path, *after], capsys)
        assert no_work == [], f"work started before the path was checked: {no_work}"
        assert code == 2, err
        cause = OUTPUT_PROBLEMS[problem]
        if problem in ("wrong suffix", "no suffix"):
            cause = "image format" if "--plot" in before else "unsupported file type"
        assert_one_line(err, command, str(path), cause)
        assert listing(tmp_path) == before_run and out == ""

    @pytest.mark.parametrize(
        "argv, flags",
        [
            (["train", "--save", "{d}/x.json", "--plot", "{d}/x.json"], "--save and --plot"),
            (["train", "--model", "{spec}", "--save", "{spec}"], None),
            (["verify", "--report", "{d}/r.md", "--pages", "{d}/r.md"], "--report and --pages"),
            (["verify", "--report", "{d}/r.md", "--pages", "{d}/../{n}/r.md"], "--report and"),
        ],
    )
    def test_two_flags_naming_one_file(self, argv, flags, tmp_path, saved, no_work, capsys):
        spec = tmp_path / "spec.json"
        spec.write_bytes(saved["spec.json"].read_bytes())
        names = {"{d}": str(tmp_path), "{n}": tmp_path.name, "{spec}": str(spec)}
        for key, value in names.items():
            argv = [a.replace(key, value) for a in argv]
        code, _, err = run(argv, capsys)
        assert code == 2 and no_work == []
        assert_one_line(err, argv[0], *(["given to both " + flags] if flags else []))
        assert spec.read_bytes() == saved["spec.json"].read_bytes()  # the input survives

    @pytest.mark.parametrize("suffix", [".pgf", ".docx", ".PNG.bak"])
    def test_plot_format_matplotlib_cannot_write(self, suffix, tmp_path, no_work, capsys):
        """A suffix matplotlib does not know, or one it cannot write here (.pgf without
        LaTeX), is refused before training; the supported formats are listed."""
        path = tmp_path / f"curves{suffix}"
        code, _, err = run(["train", "--quiet", "--plot", path], capsys)
        if suffix == ".pgf" and code == 0:
            pytest.skip("LaTeX is installed: .pgf can be written")
        assert code == 2 and no_work == []
        line = assert_one_line(err, "train", str(path))
        assert ("use one of" in line and ".png" in line) or "cannot write pgf" in line

    def test_plot_without_matplotlib_fails_before_training(
        self, tmp_path, no_work, capsys, monkeypatch
    ):
        for module in [m for m in sys.modules if m.split(".")[0] == "matplotlib"]:
            monkeypatch.setitem(sys.modules, module, None)  # imports fail: not installed
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        code, _, err = run(["train", "--quiet", "--plot", tmp_path / "c.png"], capsys)
        assert code == 3 and no_work == []
        assert_one_line(err, "train", "plotting needs matplotlib", "pip install")

    def test_verify_creates_no_directory(self, tmp_path, saved, capsys):
        """--pages into a directory that does not exist: refused, nothing created."""
        for flag in ("--pages", "--report", "--json"):
            suffix = ".json" if flag == "--json" else ".md"
            target = tmp_path / "new" / "sub" / f"out{suffix}"
            argv = ["verify", flag, target]
            argv += ["--figures", saved["figures.json"]] if flag == "--pages" else ["--quick"]
            code, _, err = run(argv, capsys)
            assert code == 2 and "does not exist" in err
            assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------- flag values
def _options(command: str) -> list[str]:
    """Every ``--option`` of ``command`` that takes a value, from its parser."""
    from manual_bp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return sorted(
        a.option_strings[-1]
        for a in sub._actions
        if a.option_strings and a.nargs != 0 and a.option_strings[-1] != "--help"
    )


HOSTILE_VALUES = ["", "-1", "0", "nan", "-inf", "1e400", "abc", "9" * 30]
#: Options whose value is a path (their classes above cover them) or that start long work.
PATH_OPTIONS = {"--save", "--plot", "--model", "--mnist", "--report", "--json", "--pages"}


class TestBadFlagValues:
    """Every option of every subcommand, hostile values: refused in one line or accepted;
    never a traceback or an internal error."""

    @pytest.mark.parametrize("command", ["train", "evaluate", "verify"])
    def test_every_option_with_hostile_values(self, command, tmp_path, saved, capsys, monkeypatch):
        monkeypatch.chdir(tmp_path)
        options = [o for o in _options(command) if o not in PATH_OPTIONS]
        assert command == "evaluate" or len(options) >= 3, options
        tried = 0
        for option in options:
            for value in HOSTILE_VALUES:
                argv = self._argv(command, option, value, saved)
                if argv is None:
                    continue
                code, _, err = run(argv, capsys)
                tried += 1
                assert "Traceback" not in err and "internal error" not in err, (argv, err)
                if code == 1 and command == "verify":
                    continue  # a verification that failed (here: no checks): the report says
                if code != 0:
                    assert code in (1, 2), (argv, code, err)
                    lines = [line for line in err.splitlines() if line.strip()]
                    assert lines and ("error:" in lines[-1] or "failed:" in lines[-1]), err
                    if code == 2:  # names the option (or its parameter) or the value
                        name = option.lstrip("-")
                        names = (
                            value,
                            repr(value),
                            option,
                            name,
                            name.replace("-", "_"),
                            name.replace("-", " "),
                        )
                        assert any(n and n.lower() in lines[-1].lower() for n in names), (
                            argv,
                            err,
                        )
        assert tried >= len(options) * len(HOSTILE_VALUES) // 2

    @staticmethod
    def _argv(command: str, option: str, value: str, saved) -> list[str] | None:
        if command == "train":
            return ["train", "--quiet", "--epochs", "1", "--sizes", "4", option, value]
        if command == "evaluate":
            return ["evaluate", saved["net.json"], option, value]
        if option in ("--cases", "--seed", "--only"):
            # A run of the real checks is minutes long; the value is judged by argparse or
            # by the runner before any check runs, which a stub stands for here.
            return ["verify", "--no-progress", option, value]
        return None

    @pytest.fixture(autouse=True)
    def _short_work(self, monkeypatch):
        """Values are judged before the work; the work itself is cut short (``--epochs``
        of 10³⁰ is a valid request for a very long run)."""
        real_verification, real_train = verify.run_verification, train_command.train

        def quick(**kwargs):  # the runner's own argument checks, then no checks at all
            return real_verification(**{**kwargs, "checks": {}})

        def one_epoch(*args, **kwargs):
            return real_train(*args, **{**kwargs, "epochs": 1})

        monkeypatch.setattr(verify, "run_verification", quick)
        monkeypatch.setattr(train_command, "train", one_epoch)

    @pytest.mark.parametrize(
        "argv, fragment",
        [
            (["train", "--layers", "dense(30)", "--model", "x.json"], "not both"),
            (["train", "--task", "copy"], "give --layers or --model too"),
            (["train", "--task", "copy", "--mnist", "."], "give --task or --mnist, not both"),
            (["train", "--layers", ""], "the layer spec is empty"),
            (["train", "--layers", "dense(" + "[" * 300 + "]" * 300 + ")"], "layer spec"),
            (["train", "--layers=" + "-" * 100_000 + "1"], "layer spec"),
            (["train", "--layers", "dense(x=__import__('os'))"], "must be literals"),
            (["train", "--layers", "nope"], "unknown layer 'nope'"),
            (["train", "--activation", "nope"], "unknown activation 'nope'"),
            (["verify", "--figures", "f.json"], "--figures only goes with --pages"),
            (["verify", "--only", "NOPE*"], "matches no registered equation ID"),
        ],
    )
    def test_conflicting_or_malformed_options(self, argv, fragment, capsys, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        code, _, err = run([*argv, "--no-progress"] if argv[0] == "verify" else argv, capsys)
        assert code == 2
        assert_one_line(err, argv[0], fragment)

    @pytest.mark.parametrize("flag", ["--dampening", "--beta1", "--eps", "--lr", "--gamma"])
    @pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
    def test_non_finite_hyperparameters_name_the_flag_and_the_value(self, flag, value, capsys):
        """Refused while parsing, so the line names the flag and what was typed (before, a
        1e400 reached the optimizer as inf: "dampening must be in [0, 1], got inf")."""
        code, _, err = run(["train", "--optimizer", "adam", f"{flag}={value}"], capsys)
        assert code == 2
        assert flag in err and value in err and "expected a finite number" in err, err

    @pytest.mark.parametrize(
        "argv", [["nope"], ["train", "--nope"], ["verify", "--cases"], ["evaluate"]]
    )
    def test_usage_errors_are_one_line_and_return_2(self, argv, capsys):
        assert main(argv) == 2  # returned, not raised: argparse's SystemExit is caught
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err  # not the usage block
        assert "error:" in err and "--help" in err

    def test_no_command_prints_help_and_returns_2(self, capsys):
        assert main([]) == 2
        assert "train" in capsys.readouterr().err


# ---------------------------------------------------------------------- failures
class TestFailures:
    """What fails after the input was accepted: exit 1, one line naming the cause."""

    @pytest.mark.parametrize(
        "argv, cause",
        [
            (["--eta", "1e300"], "lower the learning rate"),
            (
                ["--eta", "1e300", "--layers", "dense(8), relu, dense", "--cost", "quadratic"],
                "diverged",
            ),
            (["--optimizer", "adam", "--eps", "0"], "eps"),
            (["--optimizer", "rmsprop", "--eps", "0"], "eps"),
        ],
        ids=["fused path", "stack path", "adam eps=0", "rmsprop eps=0"],
    )
    def test_divergence_is_exit_1(self, argv, cause, tmp_path, capsys):
        saved_path = tmp_path / "net.json"
        code, _, err = run(
            ["train", "--quiet", "--epochs", "2", *argv, "--save", saved_path], capsys
        )
        assert code == 1, err
        assert_one_line(err, "train", "diverged" if "eps" not in argv else "", kind="failed")
        assert cause in err
        assert not saved_path.exists()  # nothing non-finite is saved

    def test_out_of_memory_is_exit_1(self, capsys, monkeypatch):
        def huge(*args, **kwargs):
            raise MemoryError("Unable to allocate 56 GiB for an array")

        monkeypatch.setattr("manual_bp.models.network.Network.__init__", huge)
        code, _, err = run(["train", "--quiet", "--sizes", "1000"], capsys)
        assert code == 1
        assert_one_line(err, "train", "not enough memory", "56 GiB", kind="failed")
        monkeypatch.undo()
        # Sizes that cannot fit in this machine's memory: an input error, before allocating.
        code, _, err = run(["train", "--quiet", "--sizes", "10000000000"], capsys)
        assert code == 2
        assert_one_line(err, "train", "--sizes [64, 10000000000, 10]", "more than this machine")

    def test_full_disk_at_save_is_exit_1_and_keeps_the_old_file(
        self, tmp_path, capsys, monkeypatch
    ):
        import manual_bp._files as files

        path = tmp_path / "net.json"
        path.write_text("previous")

        def full(fd, *args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        monkeypatch.setattr(files.os, "fsync", full)
        code, _, err = run(["train", "--quiet", "--epochs", "1", "--save", path], capsys)
        assert code == 1
        assert_one_line(err, "train", f"{path}: no space left on device", kind="failed")
        assert path.read_text() == "previous" and listing(tmp_path) == {"net.json"}

    @pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyError("k"), NameError("x")])
    def test_unexpected_exception_is_one_line_exit_1(self, exception, capsys, monkeypatch):
        def broken(*args, **kwargs):
            raise exception

        monkeypatch.setattr(train_command, "train", broken)
        assert main(["train", "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert err.startswith(f"manual-bp train: internal error: {type(exception).__name__}")
        monkeypatch.setenv("MANUAL_BP_TRACEBACK", "1")  # for the developer: the traceback
        with pytest.raises(type(exception)):
            main(["train", "--quiet"])

    def test_interrupt_is_exit_130(self, capsys, monkeypatch):
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(train_command, "train", interrupted)
        assert main(["train", "--quiet"]) == 130
        assert capsys.readouterr().err == "manual-bp train: interrupted\n"

    def test_closed_pipe_is_quiet(self):
        """`manual-bp train | head -1`: the reader leaves; no traceback, no error message."""
        script = (
            "import sys; from manual_bp.cli import main; sys.stdout = open(sys.stdout.fileno(),"
            " 'w', buffering=1); sys.exit(main(['train', '--epochs', '3', '--sizes', '4']))"
        )
        process = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        process.stdout.readline()
        process.stdout.close()  # the reader is gone
        _, err = process.communicate(timeout=60)
        assert b"Traceback" not in err and b"Error" not in err, err.decode()
        assert process.returncode in (0, 1)


# ---------------------------------------------------------------------- written files
@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _writers(tmp_path: Path):
    from manual_bp.models.sequential import Sequential
    from manual_bp.plotting import plot_learning_curves
    from manual_bp.training import History

    net = Network([3, 4, 2], seed=0)
    stack = Sequential.from_spec(["dense", "sigmoid"], (3,), 2, seed=0)
    history = History()
    history.training_cost.extend([1.0, 0.5])
    return {
        "Network .json": (tmp_path / "n.json", lambda p: save(net, p)),
        "Network .npz": (tmp_path / "n.npz", lambda p: save(net, p)),
        "Sequential .json": (tmp_path / "s.json", lambda p: save(stack, p)),
        "Sequential .npz": (tmp_path / "s.npz", lambda p: save(stack, p)),
        "verify report": (tmp_path / "r.md", lambda p: verify.write_text(p, "# r\n")),
        "plot": (tmp_path / "c.png", lambda p: plot_learning_curves(history, p)),
    }


WRITERS = ["Network .json", "Network .npz", "Sequential .json", "Sequential .npz"]
WRITERS += ["verify report", "plot"]


class TestWrittenFiles:
    """Every writer: a new file gets ``0o666 & ~umask``; a replaced file keeps its mode;
    no temporary file is left behind."""

    @pytest.mark.parametrize("writer", WRITERS)
    def test_new_file_mode_follows_the_umask(self, writer, umask, tmp_path):
        path, write = _writers(tmp_path)[writer]
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
        assert listing(tmp_path) == {path.name}

    @pytest.mark.parametrize("writer", WRITERS)
    def test_replaced_file_keeps_its_mode(self, writer, tmp_path):
        path, write = _writers(tmp_path)[writer]
        path.write_text("old")
        path.chmod(0o640)
        write(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() != b"old"

    def test_the_commands_write_what_they_say(self, tmp_path, saved, capsys):
        """train --save/--plot and verify --figures --pages, end to end, in the umask's mode."""
        model, plot = tmp_path / "m.npz", tmp_path / "c.svg"
        argv = ["train", "--quiet", "--epochs", "1", "--save", model, "--plot", plot]
        code, out, _ = run(argv, capsys)
        assert code == 0 and f"saved model to {model}" in out
        assert plot.read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
        pages = tmp_path / "eq.md"
        argv = ["verify", "--figures", saved["figures.json"], "--pages", pages]
        code, out, _ = run(argv, capsys)
        assert code == 0 and pages.read_text().startswith("# Equation index")
        mode = 0o666 & ~verify_umask()
        assert {stat.S_IMODE(p.stat().st_mode) for p in (model, plot, pages)} == {mode}


def verify_umask() -> int:
    from manual_bp._files import umask as read_umask

    return read_umask()
