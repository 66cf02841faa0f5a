"""How to call every public curvature function for tests/test_hostile_curvature.py:
:data:`ENTRIES` (a clean call per model, and the kind of value each argument takes) and
:data:`CHAIN_LEVEL`, the building blocks no user calls without ``as_chain``. A public
function added without an entry fails ``test_every_public_curvature_function_is_covered``."""

from __future__ import annotations

import functools

import numpy as np

import manual_bp.curvature
from manual_bp.curvature import ggn_matrix
from tests.hostile_curvature_values import flat_direction, list_direction
from tests.hostile_entries import Entry, public_functions

CURVATURE = public_functions(manual_bp.curvature)

#: Building blocks over a :class:`~manual_bp.curvature.chain.Chain` and arrays that a public
#: entry has already validated (``as_chain`` + ``Chain.data``); their first argument is a
#: Chain, which no user holds without ``as_chain``. Listed so that a new function must be
#: classified: a model-level function belongs in :data:`ENTRIES`.
CHAIN_LEVEL = {
    "diagonal.backpropagate_factor",
    "loss.factor_columns",
    "loss.output_factor",
    "loss.output_gradient",
    "loss.output_hessian",
    "loss.output_hessian_composed",
    "loss.output_hessian_product",
    "loss.row_weights",
    "loss.sample_targets",
    "loss.sampled_factor",
}


def _model_xy(model, x, y):
    return {"model": model, "x": x, "y": y}


XY = {"model": "model", "x": "inputs", "y": "targets"}


def _entry(name: str, extra=None, kinds=None, **options) -> Entry:
    extra = extra or (lambda model, x, y: {})
    return Entry(
        CURVATURE[name], lambda m, x, y: {**_model_xy(m, x, y), **extra(m, x, y)},
        {**XY, **(kinds or {})}, **options,
    )  # fmt: skip


PER_SAMPLE = {"per_sample": "flag"}
MC = {"per_sample": "flag", "rng": "seed", "n_samples": "count"}

ENTRIES: dict[str, Entry] = {
    "rop.gradient": _entry("rop.gradient"),
    "rop.walk_gradient": _entry("rop.walk_gradient"),
    "rop.hvp": _entry("rop.hvp", lambda m, x, y: {"v": flat_direction(m)}, {"v": "direction"}),
    "rop.ggnvp": _entry("rop.ggnvp", lambda m, x, y: {"v": list_direction(m)}, {"v": "direction"}),
    "rop.hessian_matrix": _entry("rop.hessian_matrix", models=("regression",)),
    "rop.ggn_matrix": _entry("rop.ggn_matrix", models=("regression",)),
    "diagonal.diag_ggn": _entry(
        "diagonal.diag_ggn", lambda m, x, y: {"per_sample": False}, PER_SAMPLE
    ),
    "diagonal.diag_ggn_readable": _entry(
        "diagonal.diag_ggn_readable", lambda m, x, y: {"per_sample": True}, PER_SAMPLE
    ),
    "diagonal.diag_hessian": _entry(
        "diagonal.diag_hessian", lambda m, x, y: {"per_sample": True}, PER_SAMPLE
    ),
    "diagonal.diag_hessian_readable": _entry(
        "diagonal.diag_hessian_readable", lambda m, x, y: {"per_sample": False}, PER_SAMPLE
    ),
    "diagonal.diag_ggn_mc": _entry(
        "diagonal.diag_ggn_mc",
        lambda m, x, y: {"per_sample": False, "rng": 5, "n_samples": 2},
        MC,
    ),
    "eigen.top_eigenvalue": _entry(
        "eigen.top_eigenvalue",
        lambda m, x, y: {"max_iter": 2, "tol": 1e-3, "rng": 5, "matrix": "hessian"},
        {"max_iter": "count", "tol": "tolerance", "rng": "seed", "matrix": "matrix"},
        models=("regression",),
    ),
    "kfac.kflr": _entry("kfac.kflr"),
    "kfra.kfra": _entry("kfra.kfra"),
    "kfac.kfac": _entry(
        "kfac.kfac",
        lambda m, x, y: {"rng": 5, "n_samples": 1},
        {"rng": "seed", "n_samples": "count"},
    ),
    "stats.batch_gradient": _entry("stats.batch_gradient"),
    "stats.grad_norms": _entry("stats.grad_norms"),
    "stats.grad_variance": _entry("stats.grad_variance"),
    "stats.sum_grad_squared": _entry("stats.sum_grad_squared"),
    "kfac.ggn_block": Entry(
        CURVATURE["kfac.ggn_block"],
        lambda m, x, y: {"model": m, "G": ggn_matrix(m, x, y), "layer": 1},
        {"model": "model", "G": "ggn", "layer": "layer"},
        models=("regression",),
    ),
    "chain.as_chain": Entry(
        CURVATURE["chain.as_chain"], lambda m, x, y: {"model": m}, {"model": "model"}
    ),
    "chain.flatten": Entry(
        CURVATURE["chain.flatten"],
        lambda m, x, y: {"arrays": list_direction(m)},
        {"arrays": "arrays"},
    ),
}


def _restoring(function):
    """``function`` with its model's parameters restored afterwards: an in-place step leaves
    the shared :data:`MODELS` (and the clean call a ``Same`` verdict makes) untouched. A
    refusal that changed them first is an error (the checks come before any work)."""

    @functools.wraps(function)
    def restoring(model, *args, **kwargs):
        arrays = model.parameter_arrays() if hasattr(model, "parameter_arrays") else []
        saved = [p.copy() for p in arrays]
        try:
            return function(model, *args, **kwargs)
        except (TypeError, ValueError):
            pairs = zip(arrays, saved, strict=True)
            if any(not np.array_equal(p, s, equal_nan=True) for p, s in pairs):
                raise RuntimeError("the parameters changed before the refusal") from None
            raise
        finally:
            for p, s in zip(arrays, saved, strict=True):
                p[...] = s

    return restoring


def _values_of(function):
    """``function`` returning a dict, as the list of its values (what the property reads)."""

    @functools.wraps(function)
    def values(*args, **kwargs):
        return list(function(*args, **kwargs).values())

    return values


def _kflr(m, x, y):
    return CURVATURE["kfac.kflr"](m, x, y)


NODES = np.array([[-1.0, 0.5, 2.0], [0.0, 1.0, 3.0]])
WEIGHTS = np.array([[0.2, 0.2, 0.1], [0.25, 0.15, 0.1]])
MATRIX_MC = {"matrix": "matrix", "n_samples": "sample_count", "rng": "seed"}
DP = {
    "max_grad_norm": "positive", "noise_multiplier": "tolerance", "noise": "noise",
    "rng": "seed", "expected_batch_size": "optional_count",
}  # fmt: skip


def _dp(m, x, y):
    return {"max_grad_norm": 0.7, "noise_multiplier": 1.1, "noise": flat_direction(m)}


ENTRIES.update(
    {
        "per_sample.per_sample_gradients": _entry("per_sample.per_sample_gradients"),
        "per_sample.per_sample_norms": Entry(
            CURVATURE["per_sample.per_sample_norms"],
            lambda m, x, y: {"gradients": CURVATURE["per_sample.per_sample_gradients"](m, x, y)},
            {"gradients": "batch_arrays"},
        ),
        "per_sample.by_name": Entry(
            _values_of(CURVATURE["per_sample.by_name"]),
            lambda m, x, y: {"model": m, "arrays": list_direction(m)},
            {"model": "model", "arrays": "arrays"},
        ),
        "conventions.to_backpack_batch_grad": Entry(
            CURVATURE["conventions.to_backpack_batch_grad"],
            lambda m, x, y: {"gradients": CURVATURE["per_sample.per_sample_gradients"](m, x, y)},
            {"gradients": "batch_arrays"},
        ),
        "conventions.to_backpack_sum_grad_squared": Entry(
            CURVATURE["conventions.to_backpack_sum_grad_squared"],
            lambda m, x, y: {"sgs": list_direction(m), "n": 4},
            {"sgs": "arrays", "n": "count"},
        ),
        "conventions.to_backpack_variance": Entry(
            CURVATURE["conventions.to_backpack_variance"],
            lambda m, x, y: {"variance": list_direction(m), "n": 4},
            {"variance": "arrays", "n": "count"},
        ),
        "conventions.to_backpack_kron": Entry(
            CURVATURE["conventions.to_backpack_kron"],
            lambda m, x, y: {"model": m, "factors": _kflr(m, x, y)},
            {"model": "model", "factors": "factors"},
        ),
        "fisher.efvp": _entry(
            "fisher.efvp", lambda m, x, y: {"v": flat_direction(m)}, {"v": "direction"}
        ),
        "fisher.ef_diagonal": _entry("fisher.ef_diagonal"),
        "fisher.ef_matrix": _entry("fisher.ef_matrix"),
        "sqrt_ggn.sqrt_ggn": _entry("sqrt_ggn.sqrt_ggn"),
        "sqrt_ggn.sqrt_ggn_mc": _entry(
            "sqrt_ggn.sqrt_ggn_mc",
            lambda m, x, y: {"rng": 5, "n_samples": 2},
            {"rng": "seed", "n_samples": "count"},
        ),
        "hutchinson.hutchinson_trace": _entry(
            "hutchinson.hutchinson_trace",
            lambda m, x, y: {"matrix": "hessian", "n_samples": 2, "rng": 5},
            MATRIX_MC,
        ),
        "hutchinson.hutchinson_diagonal": _entry(
            "hutchinson.hutchinson_diagonal",
            lambda m, x, y: {"matrix": "hessian", "n_samples": 2, "rng": 5},
            MATRIX_MC,
        ),
        "lanczos.lanczos_eigenvalues": _entry(
            "lanczos.lanczos_eigenvalues",
            lambda m, x, y: {"k": 1, "matrix": "hessian", "n_iter": 3, "rng": 5},
            {"k": "count", "matrix": "matrix", "n_iter": "optional_count", "rng": "seed"},
            models=("regression",),
        ),
        "lanczos.spectral_density": _entry(
            "lanczos.spectral_density",
            lambda m, x, y: {"matrix": "hessian", "n_iter": 3, "n_vectors": 2, "rng": 5},
            {"matrix": "matrix", "n_iter": "count", "n_vectors": "count", "rng": "seed"},
            models=("regression",),
        ),
        "lanczos.density_on_grid": Entry(
            CURVATURE["lanczos.density_on_grid"],
            lambda m, x, y: {
                "nodes": NODES,
                "weights": WEIGHTS,
                "grid": np.linspace(-2, 4, 7),
                "sigma": 0.3,
            },
            {"nodes": "vector", "weights": "vector", "grid": "vector", "sigma": "width"},
            models=("regression",),
        ),
        "kfac_inverse.kfac_inverse_product": Entry(
            CURVATURE["kfac_inverse.kfac_inverse_product"],
            lambda m, x, y: {
                "model": m,
                "factors": _kflr(m, x, y),
                "v": list_direction(m),
                "damping": 1e-3,
                "mode": "factors",
                "min_damping": 1e-8,
            },
            {
                "model": "model",
                "factors": "factors",
                "v": "direction",
                "damping": "tolerance",
                "mode": "mode",
                "min_damping": "tolerance",
            },
        ),
        "kfac_inverse.ekfac": _entry("kfac_inverse.ekfac"),
        "kfac_inverse.ekfac_product": Entry(
            CURVATURE["kfac_inverse.ekfac_product"],
            lambda m, x, y: {
                "model": m,
                "factors": CURVATURE["kfac_inverse.ekfac"](m, x, y),
                "v": flat_direction(m),
                "damping": 0.0,
            },
            {"model": "model", "factors": "factors", "v": "direction", "damping": "tolerance"},
        ),
        "dp.dp_gradient": _entry("dp.dp_gradient", _dp, DP),
        "dp.dp_sgd_step": Entry(
            _restoring(CURVATURE["dp.dp_sgd_step"]),
            lambda m, x, y: {**_model_xy(m, x, y), **_dp(m, x, y), "lr": 0.1},
            {**XY, **DP, "lr": "positive"},
        ),
    }
)
