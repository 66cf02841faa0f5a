"""Triage of mutation survivors for ``run_mutation.py``: a mutant's full name (or a
substring of names) -> why no test can see it ("equivalent: ...") or which new test kills
it ("killed: ..."; each kill replayed: the mutant's exact source change against the new
test, in a copy of the measured tree)."""

from __future__ import annotations

N = "manual_bp.models.network.xǁNetworkǁ"
F = "manual_bp.fast."
S = "manual_bp.models.sequential."
L = "manual_bp.layers."
O = "manual_bp."
C = "manual_bp.curvature."
KL = "killed: `test_blindspots_layers.py::"
KS = "killed: `test_blindspots_sequences.py::"
KSQ = KS + "test_sequence_layers_reprs_messages_and_float32_parameters`"
KRMS = (
    "killed: `test_blindspots_optim.py::test_centered_rmsprop_follows_torch_and_stays_finite_"
    "under_a_constant_gradient`"
)
KG = "killed: `test_blindspots_optim.py::test_gain_of_linear_maps_and_explicit_gains`"
KCP = KL + "test_convolution_and_pooling_reprs_messages_and_spec_triples`"
KNC = KL + "test_normalisation_construction_and_errors`"
KAX = KL + "test_layers_refuse_inputs_without_a_batch_axis_or_with_too_many_axes`"
KF32 = (
    "killed: `test_blindspots_model.py::test_a_float32_stack_stays_float32_from_data_to_"
    "gradients` (a float32 model computed, or kept state, in float64)"
)
KO = "killed: `test_blindspots_optim.py::"
KC = "killed: `test_blindspots_curvature.py::"
KN = KL + "test_normalisation_arguments_and_errors_are_one_clear_line`"
KE = KS + "test_embedding_errors_name_the_bad_index_and_float32_gradients_stay_float32`"
KH = KC + "test_composed_output_hessian_equals_the_closed_form_and_torch`"
CLOSED = (
    "equivalent: `check_hyperparameter` treats every `closed` other than left/right/both "
    'as "neither": the same checks and the same message'
)
STRICT = (
    "equivalent: `zip(..., strict=False)` over the chain's ops and their inputs, equal in "
    "length by construction (`chain.forward` returns one input per op)"
)

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
    # ------------------------------------------------------------------ layers
    L + "base.x_build_layer__mutmut_41": KL
    + "test_unknown_layer_name_lists_every_layer_and_activation`",
    L + "base.xǁLayerǁjvp__mutmut_2": KL + "test_a_layer_without_forward_mode_names_itself`",
    L + "base.xǁLayerǁset_extra_state__mutmut_3": (
        KL + "test_extra_state_of_a_stateless_layer_is_refused_naming_the_keys`"
    ),
    L + "containers.xǁIdentityǁjvp__mutmut_3": KL + "test_identity_and_reshape_forward_modes`",
    L + "containers.xǁReshapeǁ__init____mutmut_4": (
        KL + "test_reshape_takes_its_shape_as_arguments_or_as_one_sequence`"
    ),
    L + "containers.xǁReshapeǁjvp__mutmut_3": (
        KL + "test_identity_and_reshape_forward_modes`; also `test_adjoint.py` (own jvp adjoint)"
    ),
    L + "containers.xǁResidualǁfrom_shape__mutmut_2": KL
    + "test_residual_spec_takes_only_its_layers`",
    L + "dense.xǁDenseǁ__repr____mutmut_3": (
        KL + "test_dense_repr_shows_a_missing_bias_and_spec_gives_out_features_once`"
    ),
    L + "dense.xǁDenseǁfrom_shape__mutmut_2": (
        KL + "test_dense_repr_shows_a_missing_bias_and_spec_gives_out_features_once`"
    ),
    L + "activation.xǁActivationLayerǁ__init____mutmut_1": (
        KL + "test_activation_layer_defaults_to_the_identity`"
    ),
    L + "dense.xǁDenseǁreset_parameters__mutmut_26": (
        KL + "test_default_biases_follow_torch_bound_from_the_weight_fan_in[dense]` (the bias "
        "bound came from the bias's own length, not the weight's fan-in)"
    ),
    L + "_im2col.x_conv_input_grad_fast__mutmut_18": (
        "equivalent: `reshape(..., -2)`; NumPy (2.4) takes any negative size as the one "
        "inferred, so -2 ≡ -1 (a NumPy that refused it would fail every convolution test)"
    ),
    L + "convolution.x_reset_conv_parameters__mutmut_23": (
        KL + "test_nielsen_biases_are_standard_normal[conv2d]`"
    ),
    L + "convolution.xǁ_ConvNdǁfrom_shape__mutmut_5": (
        KL + "test_convolution_specs_name_the_input_shape_they_need`"
    ),
    L + "convolution_transpose.xǁConvTranspose2dǁ__init____mutmut_40": (
        KL + "test_transposed_convolution_out_channels_is_one_integer`"
    ),
    L + "pooling.xǁAvgPool2dǁ__init____mutmut_5": (
        KL + "test_avgpool_stride_is_honoured_and_float32_stays_float32`"
    ),
    L + "pooling.xǁAvgPool2dǁforward__mutmut_31": (
        KL + "test_avgpool_stride_is_honoured_and_float32_stays_float32`"
    ),
    L + "pooling.xǁ_Pool2dǁ__repr____mutmut_1": KL + "test_pooling_repr_and_bad_dilation_message`",
    L + "pooling.xǁ_Pool2dǁ_setup__mutmut_45": KL + "test_pooling_repr_and_bad_dilation_message`",
    L + "pooling.xǁ_Pool2dǁ_geometry__mutmut_22": (
        "equivalent: more bottom/right padding than the last window reaches; windows are "
        "indexed from the output size (`_out`), so the extra rows/columns are never read "
        "(forward) and are cut off with the padding (backward) — memory and time only"
    ),
    L + "dropout.xǁDropoutǁ_check__mutmut_4": KL + "test_dropout_names_its_input_in_shape_errors`",
    L + "dropout.xǁDropoutǁjvp__mutmut_5": (
        "killed: `test_adjoint.py::test_layer_vjp_is_the_adjoint_of_torch_jvp[Dropout]` (own "
        "jvp against backward)"
    ),
    L + "normalisation.x__positive_float__mutmut_3": KN,
    L + "normalisation.xǁLayerNormǁoutput_shape__mutmut_8": KN,
    L + "normalisation.xǁ_BatchNormǁ__init____mutmut_46": KN,
    L + "normalisation.xǁ_BatchNormǁfrom_shape__mutmut_2": KN,
    L + "normalisation.xǁLayerNormǁbackward__mutmut_2": (
        KL + "test_layernorm_refuses_an_upstream_gradient_of_another_shape` (a broadcastable "
        "`dout` was silently accepted)"
    ),
    L + "embedding.xǁEmbeddingǁbackward__mutmut_17": KE,
    L + "embedding.xǁEmbeddingǁindices__mutmut_34": KE,
    L + "recurrent.xǁRecurrentLayerǁ__init____mutmut_32": (
        KS + "test_recurrent_layers_have_torch_biases_by_default` (every layer lost its biases)"
    ),
    L + "attention.x_mha_mask__mutmut_85": KS + "test_mha_mask_has_the_dtype_asked_for`",
    L + "attention.xǁMultiheadAttentionǁ__repr____mutmut_7": (
        KS + "test_attention_repr_and_float32_causal_output`"
    ),
    # ------------------------------------------------------------------ optimizers
    O + "optimizers.adagrad.xǁAdagradǁ__init____mutmut_1": KO
    + "test_default_hyperparameters_are_torchs`",
    O + "optimizers.adam.xǁAdamWǁ__init____mutmut_18": (
        KO + "test_adamw_amsgrad_follows_torch` (`AdamW(amsgrad=True)` ignored the flag)"
    ),
    O + "optimizers.base.x_check_hyperparameter__mutmut_37": (
        KO + "test_interval_errors_show_which_ends_are_allowed`"
    ),
    O + "optimizers.cli.x_schedule_from_args__mutmut_37": (
        KO + "test_cli_cosine_schedule_lasts_the_training_by_default`"
    ),
    O + "optimizers.sgd.xǁSGDǁstep__mutmut_26": KO + "test_step_count_counts_steps[SGD]`",
    O + "schedules.xǁExponentialLRǁ__init____mutmut_11": CLOSED,
    O + "schedules.xǁStepLRǁ__init____mutmut_13": CLOSED,
    O + "initializers.x_default_initializer__mutmut_11": (
        KO + "test_nielsen_default_initializer_statistics`"
    ),
    O + "initializers.x_fans__mutmut_7": KO + "test_fans_of_scalars_and_vectors`",
    # ------------------------------------------------------------------ curvature
    C + "chain.xǁChainǁcheck_direction__mutmut_35": (
        "equivalent: `zip(..., strict=None)` right after `len(v) != len(self.shapes)` raised"
    ),
    C + "diagonal.x__residual_factor__mutmut_34": (
        "equivalent (values): a float64 identity makes a float32 model's coupled-head "
        "second-order VJP float64; the factor is accumulated into arrays of the chain's "
        "dtype, so results move only within float32 rounding (towards the exact value)"
    ),
    C + "diagonal.x_diag_ggn_mc__mutmut_27": (
        KC + "test_diag_ggn_mc_per_sample_has_a_batch_axis_and_averages_to_the_batch_diagonal`"
    ),
    C + "eigen.x_top_eigenvalue__mutmut_3": (
        "equivalent: another fixed default seed of the start vector; the estimate is "
        "reproducible either way and converges to the same λ within `tol` (what is promised)"
    ),
    C + "loss.x__head_jacobian__mutmut_15": KH,
    C + "loss.x_output_hessian_composed__mutmut_23": KH,
    C + "loss.x_output_hessian_composed__mutmut_46": KH,
    C + "rop.x__matrix__mutmut_15": (
        "equivalent: `np.stack` on axis 0 gives the transpose, and `_matrix` only builds "
        "`hessian_matrix` and `ggn_matrix`, symmetric matrices (they differ at rounding: the "
        "columns `H eᵢ` are each rounded)"
    ),
    C + "rop.x__r_sweep__mutmut_70": STRICT,
    C + "stats.x__errors__mutmut_26": STRICT,
    C + "rop.x_gradient__mutmut_23": KC + "test_rop_gradient_equals_torch`",
    C + "rop.x_gradient__mutmut_6": KC + "test_rop_gradient_equals_torch`",
    S + "x__describe__mutmut_9": (
        "killed: `test_blindspots_model.py::test_a_bad_layer_spec_is_named_in_full_in_the_error` "
        "(a config dict was named `None`)"
    ),
    S + "xǁSequentialǁ_allocate__mutmut_25": KF32,
    S + "xǁSequentialǁprepare_inputs__mutmut_34": KF32,
    S + "xǁSequentialǁprepare_targets__mutmut_6": KF32,
    S + "xǁSequentialǁbackprop__mutmut_12": (
        "killed: `test_blindspots_model.py::test_saturated_softmax_log_likelihood_uses_the_"
        "shortcut_and_stays_finite` (without the shortcut the gradient divides by a = 0)"
    ),
    S + "xǁSequentialǁget_config__mutmut_10": (
        "killed: `test_blindspots_model.py::test_sequential_config_keeps_the_input_shape`"
    ),
    S + "xǁSequentialǁtotal_cost__mutmut_6": (
        "killed: `test_blindspots_model.py::test_sequential_total_cost_is_the_mean_negative_log_"
        "likelihood_in_eval_mode`"
    ),
    S + "xǁSequentialǁcopy__mutmut_24": (
        "equivalent: `zip` without `strict` over the leaves of a model and of its clone, "
        "built from the same config: equal in number by construction"
    ),
    S + "xǁSequentialǁfrom_network__mutmut_9": (
        "equivalent: `zip` without `strict` over a Network's weights, biases and activations, "
        "one per layer by construction"
    ),
    S + "xǁSequentialǁfrom_network__mutmut_17": (
        "equivalent: each Dense is built in float64 and then overwritten with the network's "
        "(float32) W and b; `Sequential(..., dtype=net.dtype)` moves every parameter into one "
        "buffer of the model's dtype, so the parameters are the network's, bit for bit"
    ),
    L + "activation.xǁActivationLayerǁbackward__mutmut_6": KL + "test_layer_error_lines_and_reprs`",
    L + "base.x_build_layer__mutmut_3": KL + "test_spec_triples_and_their_positional_arguments`",
    L + "base.x_check_input__mutmut_10": KAX,
    L + "containers.xǁFlattenǁ__repr____mutmut_2": KL + "test_layer_error_lines_and_reprs`",
    L + "containers.xǁReshapeǁ__init____mutmut_19": KL + "test_layer_error_lines_and_reprs`",
    L + "containers.xǁReshapeǁforward__mutmut_7": KAX,
    L + "dense.xǁDenseǁ__init____mutmut_39": KL
    + "test_a_float32_dense_layer_has_float32_parameters`",
    L + "dense.xǁDenseǁforward__mutmut_16": KAX,
    L + "dense.xǁDenseǁforward__mutmut_8": KAX,
    L + "dense.xǁDenseǁfrom_shape__mutmut_30": KL
    + "test_spec_triples_and_their_positional_arguments`",
    L + "dense.xǁDenseǁreset_parameters__mutmut_8": (
        "equivalent: `initialize(..., dtype=None)` draws in float64 and casts at its end; "
        "writing that into the float32 weight casts the same values the same way"
    ),
    L + "_im2col.x__panel_matmul__mutmut_6": (
        "equivalent: `>` → `>=` at the size where one `matmul` and column panels of "
        "`matmul`s are both used; the two branches compute the same product"
    ),
    L + "_im2col.x__panel_matmul_t__mutmut_29": (
        KL + "test_conv_weight_gradient_keeps_float64_when_the_upstream_gradient_is_float32` "
        "(the panel accumulator took dout's float32)"
    ),
    L + "_im2col.x_conv_forward_readable__mutmut_61": (
        "equivalent: `einsum` subscripts in capitals, `OC,NCYX->NOYX`: the same contraction"
    ),
    L + "_im2col.x_im2col__mutmut_44": (
        "equivalent: the overlapping `as_strided` view of im2col marked writeable; no caller "
        "writes into it (the flag guards against a future one)"
    ),
    L + "convolution.xǁ_ConvNdǁ__init____mutmut_24": KCP,
    L + "convolution.xǁ_ConvNdǁ__repr____mutmut_19": KCP,
    L + "convolution.xǁ_ConvNdǁ__repr____mutmut_7": KCP,
    L + "convolution.xǁ_ConvNdǁfrom_shape__mutmut_10": (
        KL + "test_convolution_specs_name_the_input_shape_they_need`"
    ),
    L + "convolution.xǁ_ConvNdǁoutput_shape__mutmut_15": KCP,
    L + "convolution_transpose.xǁConvTranspose2dǁ__init____mutmut_1": (
        KL + "test_layer_defaults_are_torchs[ConvTranspose2d]` (default stride 2, torch's 1)"
    ),
    L + "convolution_transpose.xǁConvTranspose2dǁfrom_shape__mutmut_6": KCP,
    L + "pooling.xǁAvgPool2dǁforward__mutmut_2": KCP,
    L + "pooling.xǁAvgPool2dǁforward__mutmut_7": KCP,
    L + "pooling.xǁMaxPool2dǁbackward__mutmut_24": (
        KL + "test_maxpool_gradients_of_float32_stay_float32[readable]`"
    ),
    L + "pooling.xǁMaxPool2dǁbackward__mutmut_7": (
        'equivalent (values): `implementation="readable"` runs the fast backward; both route '
        "each gradient to the same first maximum (pinned equal by "
        "`tests/test_pooling.py::test_maxpool_readable_equals_fast`): only the code path differs"
    ),
    L + "pooling.xǁ_Pool2dǁ_geometry__mutmut_10": (
        "equivalent: as `_geometry__mutmut_22`, padding beyond the last window's reach, never read"
    ),
    L + "pooling.xǁ_Pool2dǁ_setup__mutmut_10": KCP,
    L + "pooling.xǁ_Pool2dǁfrom_shape__mutmut_5": KCP,
    L + "dropout.xǁDropoutǁreset_parameters__mutmut_6": (
        "equivalent: `rng.integers(2**63 - 1)` is `rng.integers(0, 2**63 - 1)`: the same draw"
    ),
    L + "normalisation.xǁLayerNormǁ__init____mutmut_13": KNC,
    L + "normalisation.xǁLayerNormǁfrom_shape__mutmut_9": KNC,
    L + "normalisation.xǁ_BatchNormǁ__init____mutmut_34": KNC,
    L + "normalisation.xǁ_BatchNormǁbackward__mutmut_5": KNC,
    L + "normalisation.xǁ_BatchNormǁreset_parameters__mutmut_8": (
        KNC[:-1] + " (β reset to 1, torch's is 0)`"
    ),
    L + "embedding.xǁEmbeddingǁ__repr____mutmut_1": KSQ,
    L + "recurrent.xǁRecurrentLayerǁ__init____mutmut_20": KSQ,
    L + "recurrent.xǁRecurrentLayerǁ__init____mutmut_66": KSQ,
    L + "recurrent.xǁRecurrentLayerǁ__repr____mutmut_22": KSQ,
    L + "recurrent.xǁRecurrentLayerǁoutput_shape__mutmut_7": KSQ,
    L + "recurrent.xǁRecurrentLayerǁ_forward__mutmut_55": (
        "equivalent: `zip(finals, final, strict=False)`: one final state slot per state "
        "array of the cell (h, or h and c) by construction"
    ),
    L + "recurrent.xǁRecurrentLayerǁ_initial__mutmut_30": (
        "equivalent: `astype(..., copy=None)` and `copy=False` both copy only when the dtype "
        "differs (NumPy 2)"
    ),
    L + "recurrent_cells.x_gru_step__mutmut_32": (
        "equivalent: `np.split(gi, 3, axis=+1)`; the gate pre-activations are always 2-D "
        "`(batch, 3H)`, where axis 1 is axis −1"
    ),
    L + "attention.x__additive_mask__mutmut_20": (
        KS + "test_mha_mask_casts_a_float_mask_to_the_dtype_asked_for`"
    ),
    L + "attention.xǁMultiheadAttentionǁ__init____mutmut_36": KSQ,
    L + "attention.xǁMultiheadAttentionǁ__init____mutmut_8": (
        KSQ[:-1] + " (a bool or a float head count was accepted)`"
    ),
    L + "attention.xǁMultiheadAttentionǁattend__mutmut_31": KSQ,
    L + "attention.xǁMultiheadAttentionǁattend_backward__mutmut_39": (
        "equivalent: `zip(..., strict=False)` over (query, key, value) and their three "
        "projection gradients"
    ),
    O + "optimizers.adagrad.xǁAdagradǁ__init____mutmut_43": KO
    + "test_hyperparameter_errors_name_the_parameter`",
    O + "optimizers.adam.xǁAdamǁ__init____mutmut_35": KO
    + "test_hyperparameter_errors_name_the_parameter`",
    O + "optimizers.base.x_check_hyperparameter__mutmut_25": (
        'equivalent: the `"right"` case of `closed`; no hyper-parameter of the library '
        'uses `closed="right"` (only left, both, neither)'
    ),
    O + "optimizers.base.x_check_hyperparameter__mutmut_48": (
        KO + "test_interval_errors_show_which_ends_are_allowed`"
    ),
    O + "optimizers.cli.x__add_options__mutmut_12": (
        "equivalent: `dest=None` for the flag options: argparse derives the same dest from "
        "`--<dest with - for _>`"
    ),
    O + "optimizers.cli.x_add_optimizer_arguments__mutmut_21": (
        KO + "test_cli_help_names_the_options_and_their_chapter`"
    ),
    O + "optimizers.cli.x_add_optimizer_arguments__mutmut_8": (
        KO + "test_cli_help_names_the_options_and_their_chapter`"
    ),
    O + "optimizers.cli.x_schedule_from_args__mutmut_25": (
        KO + "test_cli_cosine_schedule_lasts_the_training_by_default` (an explicit `--t-max` "
        "was overridden by `--epochs`)"
    ),
    O + "optimizers.rmsprop.xǁRMSpropǁ__init____mutmut_53": KRMS,
    O + "optimizers.rmsprop.xǁRMSpropǁstep__mutmut_81": KRMS[:-1] + " (√ of a negative)`",
    O + "optimizers.sgd.xǁSGDǁ__init____mutmut_9": CLOSED,
    O + "optimizers.sgd.xǁSGDǁstep__mutmut_14": (
        "equivalent: `zip` without `strict` right after `_as_lists` checked "
        "`len(params) == len(grads)`"
    ),
    O + "regularizers.xǁL2ǁpenalty__mutmut_6": KO + "test_regulariser_penalties`",
    O + "initializers.x_calculate_gain__mutmut_14": KG,
    O + "initializers.x_initialize__mutmut_62": KG,
    O + "initializers.x_initialize__mutmut_85": KG,
    O + "initializers.x_large_initializer__mutmut_8": KG,
    C + "chain.xǁChainǁcheck_direction__mutmut_23": (
        "equivalent: `zip(..., strict=None)` over `np.split` of the flat vector by the "
        "parameter sizes: one piece per shape by construction"
    ),
    C + "chain.xǁChainǁcheck_direction__mutmut_46": (
        KC + "test_hvp_takes_a_list_of_arrays_or_one_flat_vector`"
    ),
    C + "diagonal.x__accumulate__mutmut_8": (
        "equivalent: `out[ib] = d` instead of `+= d` in the per-sample branch; `out` starts at "
        "zeros and each dense op has its own bias slot, written once"
    ),
    C + "diagonal.x__vjp_columns__mutmut_11": (
        "equivalent: `np.repeat(z, c, axis=None)` flattens `z`, but the coupled activations "
        "(softmax, log-softmax) compute their VJP from `a` alone (checked with a hidden softmax "
        "by `test_factored_diag_hessian_through_a_hidden_softmax`)"
    ),
    C + "loss.x__diag__mutmut_3": KC + "test_output_hessian_of_a_float32_model_is_float32`",
    C + "loss.x_sample_targets__mutmut_32": KC
    + "test_monte_carlo_ggn_with_large_logits_is_finite`",
    C + "rop.x_ggn_matrix__mutmut_6": KC + "test_ggn_matrix_columns_are_ggn_vector_products`",
    C + "loss.x__head_jacobian__mutmut_6": KH,
    C + "loss.x_output_hessian_composed__mutmut_11": KH,
    C + "loss.x_output_hessian_composed__mutmut_34": KH,
    C + "rop.x_gradient__mutmut_11": KC + "test_rop_gradient_equals_torch`",
    C + "rop.x_gradient__mutmut_34": KC + "test_rop_gradient_equals_torch`",
    C + "stats.x_grad_norms__mutmut_11": (
        "equivalent: the size of the zero arrays `out` starts from; every slot is then "
        "assigned (`out[iw] = …`, `out[ib] = …`), so the zeros are never read"
    ),
    C + "stats.x_grad_variance__mutmut_26": (
        "equivalent: `zip` without `strict` over two lists with one entry per parameter array"
    ),
}
