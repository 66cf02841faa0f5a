"""Triage of mutation survivors for ``run_mutation.py``: a mutant's full name (or a
substring of names) -> why no test can see it ("equivalent: ...") or which new test kills
it ("killed: ..."; each kill replayed: the mutant's exact source change against the new
test, in a copy of the measured tree)."""

from __future__ import annotations

N = "manual_bp.network.xǁNetworkǁ"
F = "manual_bp.fast."
S = "manual_bp.sequential."

TRIAGE: dict[str, str] = {
    # ------------------------------------------------------------------ network.py
    N + "__init____mutmut_2": (
        'equivalent: the default activation name `"SIGMOID"`; registry names are '
        "case-insensitive (`_registry.canonical_name` lowercases), the same Sigmoid is built."
    ),
    N + "accuracy__mutmut_2": (
        "killed: `test_blindspots_model.py::test_accuracy_counts_labels_and_one_hot_rows_alike`"
    ),
    N + "backprop_per_sample__mutmut_28": (
        "equivalent: `zip(..., strict=None)`; `x` and `y` were just validated to the same "
        "batch size (`as_targets(y, ..., x.shape[0])`), so strictness is never exercised."
    ),
    N + "backprop_single__mutmut_20": (
        "killed: `test_blindspots_model.py::test_backprop_single_takes_an_integer_label_like_"
        "its_one_hot_row` (batch `None`: an integer label raised a batch-size error)"
    ),
    N + "total_cost__mutmut_22": (
        "killed: `test_blindspots_model.py::test_total_cost_adds_the_l2_term_scaled_by_the_"
        "training_set_size` (`n` ignored)"
    ),
    N + "total_cost__mutmut_36": (
        "killed: `test_blindspots_model.py::test_total_cost_adds_the_l2_term_scaled_by_the_"
        "training_set_size` (`np.vdot(W, )` raises)"
    ),
    # ------------------------------------------------------------------ fast.py
    F + "x__output_kind__mutmut_12": (
        "killed: `test_blindspots_model.py::test_fast_training_with_a_user_cost_whose_shortcut_"
        "is_not_a_minus_y` (every built-in shortcut is `a − y`, so only a user's cost with its "
        "own shortcut reaches this branch; the mutant trained it with `a − y`)"
    ),
    F + "xǁFastTrainerǁ__init____mutmut_6": (
        "equivalent (values): every layer takes the generic path, `σ.forward` and "
        "`σ.backward` of the activation object instead of the fused in-place formulas; the "
        "same functions within rounding (the fused ones exist for speed: a slowdown only, "
        "seen by `benchmarks/`, not by a value)"
    ),
    F + "xǁFastTrainerǁrun_epoch__mutmut_6": (
        "killed: `test_blindspots_model.py::test_fast_training_with_saturated_sigmoids_"
        "overflows_silently_and_equals_readable` (`e^{−z}` overflow of a saturated sigmoid "
        "raised under `np.seterr(over='raise')`)"
    ),
    # ------------------------------------------------------------------ sequential.py
    S + "x__describe__mutmut_1": (
        "killed: `test_blindspots_model.py::test_a_bad_layer_spec_is_named_in_full_in_the_error` "
        "(a 3-letter name was cut to its first letter, a 3-key dict raised KeyError)"
    ),
    S + "xǁSequentialǁoutput_cost__mutmut_7": (
        "killed: `test_blindspots_model.py::test_sequential_total_cost_is_the_mean_negative_log_"
        "likelihood_in_eval_mode` (`Sequential.total_cost` against torch's cross-entropy)"
    ),
    S + "xǁSequentialǁprepare_inputs__mutmut_8": (
        "killed: `test_blindspots_model.py::test_sequential_rejects_non_numeric_inputs_with_a_"
        "type_error`"
    ),
}
