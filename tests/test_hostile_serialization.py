"""Hostile path and model arguments into every public saving and loading function (issue 24).

The functions are found by introspection: every public function of ``manual_bp`` with a
parameter named ``path`` (``save``, ``load``, ``save_network``, ``load_network``); a saver is
one whose first parameter is the model. Each argument takes, one at a time, a value drawn by
hypothesis from its catalogue: paths of the wrong type, empty or with a NUL byte, a
directory, a missing parent directory, a directory that cannot be written, a file of an
unsupported kind, a file that does not exist; models that are not models. ``str``, ``bytes``
and ``Path`` forms are accepted alike.

The property: an accepted call saves a file that loads back to the same model (or loads the
file saved); a refused one raises one ``TypeError``, ``ValueError`` or ``OSError`` on one
line naming the argument or the path, never a Python-internal message — and nothing is
written on failure (the directory's listing is unchanged: no file, no temporary file).
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import manual_bp
from manual_bp import Dense, Network
from tests.hostile_entries import INTERNAL

FUNCTIONS = {
    name: obj
    for name in manual_bp.__all__
    if inspect.isfunction(obj := getattr(manual_bp, name))
    and "path" in inspect.signature(obj).parameters
}
SAVERS = {
    n: f for n, f in FUNCTIONS.items() if next(iter(inspect.signature(f).parameters)) != "path"
}
LOADERS = {n: f for n, f in FUNCTIONS.items() if n not in SAVERS}


def test_the_introspection_finds_the_savers_and_loaders():
    assert {"save", "save_network"} <= set(SAVERS) and {"load", "load_network"} <= set(LOADERS)


def _model() -> Network:
    return Network([2, 3, 2], "tanh", "quadratic", seed=0)


#: name -> builder(tmp directory) of a path argument: (value, accepted?)
PATHS = {
    "str .json": lambda d: (str(d / "m.json"), True),
    "str .npz": lambda d: (str(d / "m.npz"), True),
    "Path": lambda d: (d / "m.json", True),
    "bytes": lambda d: (os.fsencode(d / "m.npz"), True),
    "None": lambda d: (None, False),
    "int": lambda d: (3, False),
    "float": lambda d: (1.5, False),
    "list": lambda d: ([str(d / "m.json")], False),
    "object": lambda d: (object(), False),
    "empty": lambda d: ("", False),
    "NUL byte": lambda d: (str(d / "m\0.json"), False),
    "directory": lambda d: (str(_mkdir(d / "sub.json")), False),
    "missing parent": lambda d: (str(d / "no" / "m.json"), False),
    "suffix": lambda d: (str(d / "m.txt"), False),
    "no suffix": lambda d: (str(d / "m"), False),
}
#: what a loader is refused besides: a file that is missing
LOAD_ONLY = {"missing file": lambda d: (str(d / "absent.json"), False)}
MODELS = {
    "None": None,
    "str": "network",
    "layer": Dense(2, 3),
    "object": object(),
    "dict": {"sizes": [2, 3, 2]},
    "array": np.zeros((2, 2)),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def _refused(where: str, error: BaseException | None, names: tuple[str, ...]) -> None:
    assert error is not None, f"{where}: accepted"
    assert isinstance(error, (TypeError, ValueError, OSError)), f"{where} raised {error!r}"
    message = str(error)
    assert "\n" not in message, f"{where}: a message of several lines: {message!r}"
    assert any(n in message for n in names), f"{where}: names none of {names}: {message!r}"
    assert not any(f in message for f in INTERNAL), f"{where}: internal message {message!r}"
    assert ".tmp" not in message, f"{where}: names the temporary file: {message!r}"


def _call(function, *args):
    try:
        return function(*args), None
    except Exception as error:  # judged by the caller
        return None, error


def _same_model(a, b) -> None:
    x = np.random.default_rng(0).standard_normal((3, 2))
    np.testing.assert_array_equal(a.feedforward(x), b.feedforward(x))


@pytest.mark.parametrize("name", sorted(SAVERS))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_paths_and_models_into_every_saver(name, data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("save")
    function = SAVERS[name]
    model_argument = next(iter(inspect.signature(function).parameters))
    if data.draw(st.booleans(), label="hostile model"):
        kind = data.draw(st.sampled_from(sorted(MODELS)), label="model")
        path, model, accepted = directory / "m.json", MODELS[kind], False
        names = (model_argument,)
    else:
        kind = data.draw(st.sampled_from(sorted(PATHS)), label="path")
        (path, accepted), model = PATHS[kind](directory), _model()
        names = ("path", str(path)) if isinstance(path, (str, Path)) else ("path",)
    before = _listing(directory)
    result, error = _call(function, model, path)
    where = f"{name}({kind})"
    if accepted:
        assert error is None, f"{where}: refused {error!r}"
        _same_model(manual_bp.load(result), model)
        return
    _refused(where, error, names)
    assert _listing(directory) == before, f"{where}: wrote on failure"


@pytest.mark.parametrize("name", sorted(LOADERS))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_paths_into_every_loader(name, data, tmp_path_factory):
    directory = tmp_path_factory.mktemp("load")
    model = _model()
    kind = data.draw(st.sampled_from(sorted(PATHS | LOAD_ONLY)), label="path")
    path, accepted = (PATHS | LOAD_ONLY)[kind](directory)
    if accepted:
        manual_bp.save(model, os.fsdecode(path))
    result, error = _call(LOADERS[name], path)
    where = f"{name}({kind})"
    if accepted:
        assert error is None, f"{where}: refused {error!r}"
        _same_model(result, model)
        return
    names = ("path", str(path)) if isinstance(path, (str, Path)) else ("path",)
    _refused(where, error, names)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
@pytest.mark.parametrize("name", sorted(SAVERS))
def test_a_directory_that_cannot_be_written_is_named_before_the_work(name, tmp_path):
    locked = _mkdir(tmp_path / "locked")
    locked.chmod(0o555)
    try:
        _, error = _call(SAVERS[name], _model(), locked / "m.json")
        _refused(name, error, (str(locked / "m.json"),))
        assert isinstance(error, PermissionError) and _listing(locked) == []
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("name", sorted(SAVERS))
def test_a_failed_save_keeps_the_previous_file(name, tmp_path):
    """Atomic: a refused model leaves the file saved before intact, with no temporary file."""
    path = tmp_path / "m.npz"
    manual_bp.save(_model(), path)
    content = path.read_bytes()
    _, error = _call(SAVERS[name], Dense(2, 3), path)
    assert isinstance(error, TypeError)
    assert path.read_bytes() == content and _listing(tmp_path) == ["m.npz"]


@pytest.mark.parametrize("kind", ["directory", "missing parent", "suffix", "empty", "None"])
@pytest.mark.parametrize("name", sorted(SAVERS))
def test_a_bad_path_is_refused_before_the_work(name, kind, tmp_path, monkeypatch):
    """The path is checked before the model is serialised (issue 24, class 4)."""
    import manual_bp.serialization as serialization

    def work(model):
        raise AssertionError("the model was serialised before the path was checked")

    monkeypatch.setattr(serialization, "_header_and_arrays", work)
    path, _ = PATHS[kind](tmp_path)
    _, error = _call(SAVERS[name], _model(), path)
    names = ("path", str(path)) if isinstance(path, (str, Path)) else ("path",)
    _refused(f"{name}({kind})", error, names)
