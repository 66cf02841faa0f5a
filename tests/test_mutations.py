"""Every check can fail: break each equation on purpose and watch its test fail.

Each mutation replaces one exact snippet of the library (dropping a ½, a 1/n, a
transpose, a mask, σ' → σ, ...) in a temporary copy of the source tree, then
runs the test that verifies the equation. The mutation must make it FAIL; a
test that still passes proves nothing and fails here instead. The snippet must
also still exist in the real source, so this table cannot silently go stale.

Run alone with ``python -m pytest tests/test_mutations.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    equation: str
    what: str
    path: str
    old: str
    new: str
    test: str


MUTATIONS = [
    Mutation(
        "FWD.dense",
        "drop the bias",
        "manual_bp/layers/dense_step.py",
        "    if b is not None:\n        z += b\n",
        "",
        "tests/test_backprop.py::test_forward_matches_torch",
    ),
    Mutation(
        "BP1",
        "drop σ'(zᴸ) in the general BP1",
        "manual_bp/costs/base.py",
        "return activation.backward(self.grad(a, y), z, a)",
        "return self.grad(a, y)",
        "tests/test_backprop.py::test_loop_form_equals_matrix_form",
    ),
    Mutation(
        "BP2",
        "σ' → σ in hidden layers (an elementwise activation's VJP)",
        "manual_bp/activations/base.py",
        "        return grad_a * type(self).derivative.unchecked(self, z, a)  # checked on entry\n",
        "        return grad_a * type(self).forward.unchecked(self, z)  # checked on entry\n",
        "tests/test_backprop.py::test_bp2_hidden_errors",
    ),
    Mutation(
        "BP2",
        "transpose Wˡ⁺¹ in the dense layer's input VJP (square layers only survive the shapes)",
        "manual_bp/layers/dense.py",
        "    dx = dz @ W if input_grad else None\n",
        "    dx = (dz @ W.T if W.shape[0] == W.shape[1] else dz @ W) if input_grad else None\n",
        "tests/test_backprop.py::test_bp2_hidden_errors",
    ),
    Mutation(
        "BP3",
        "drop the 1/n of the mean cost from the seed of the backward pass",
        "manual_bp/models/targets.py",
        "            return (per_row / n).reshape(out.shape)\n",
        "            return per_row.reshape(out.shape)\n",
        "tests/test_backprop.py::test_bp3_bias_gradients",
    ),
    Mutation(
        "BP4",
        "transpose the dense weight gradient (square layers only survive the shapes)",
        "manual_bp/layers/dense.py",
        "    return dx, dz_rows.T @ x_rows, dz_rows.sum(axis=0)\n",
        "    square = x_rows.shape[1] == dz_rows.shape[1]\n"
        "    dW = x_rows.T @ dz_rows if square else dz_rows.T @ x_rows\n"
        "    return dx, dW, dz_rows.sum(axis=0)\n",
        "tests/test_backprop.py::test_bp4_weight_gradients",
    ),
    Mutation(
        "BP1",
        "Nielsen's δˡ lose their n (the mean cost's ∂C/∂zˡ reported as per-sample errors)",
        "manual_bp/models/network.py",
        "deltas = [n * received[k] for k in range(0, len(self.layers), 2)]",
        "deltas = [received[k] for k in range(0, len(self.layers), 2)]",
        "tests/test_backprop.py::test_bp1_output_error",
    ),
    Mutation(
        "BP.input",
        "the input gradient of the per-sample cost instead of the mean",
        "manual_bp/models/network.py",
        "            input_grad=result.input_grad,\n",
        "            input_grad=n * result.input_grad,\n",
        "tests/test_backprop.py::test_input_gradient",
    ),
    Mutation(
        "BP.single",
        "drop σ' in the per-sample hidden layers",
        "manual_bp/models/network.py",
        "            deltas[l] = sigmas[l].backward(\n"
        "                upstream[None, :], zs[l][None, :], activations[l + 1][None, :]\n"
        "            )[0]\n",
        "            deltas[l] = upstream\n",
        "tests/test_backprop.py::test_loop_form_equals_matrix_form",
    ),
    Mutation(
        "SGD.average",
        "per-sample ∂C_x/∂W off by a factor 2 (the dense layer's per-sample product)",
        "manual_bp/layers/dense.py",
        'grads = {"weight": np.swapaxes(M_rows, 2, 3) @ x_rows}',
        'grads = {"weight": 2 * np.swapaxes(M_rows, 2, 3) @ x_rows}',
        "tests/test_backprop.py::test_per_sample_gradients_match_vmap",
    ),
    Mutation(
        "PROD.dense.residual",
        "drop the mixed term R{W} in the dense layer's backward (a GGN product, not H v)",
        "manual_bp/layers/dense.py",
        '            r_x = (dout_rows @ T_params["weight"]).reshape(V, *x.shape)\n',
        "            r_x = np.zeros((V, *x.shape), dtype=x.dtype)\n",
        "tests/test_layer_products.py::test_dense_products_match_torch_func",
    ),
    Mutation(
        "PROD.dense.vjp",
        "per-sample weight shares summed over the batch",
        "manual_bp/layers/dense.py",
        'grads = {"weight": np.swapaxes(M_rows, 2, 3) @ x_rows}  # (V, N, n_out, n_in)',
        'grads = {"weight": (np.swapaxes(M_rows, 2, 3) @ x_rows).sum(1, keepdims=True)'
        " + 0 * x_rows[None, :, :1, :1]}",
        "tests/test_layer_products.py::test_dense_products_match_torch_func",
    ),
    Mutation(
        "PROD.dense.jvp",
        "transposed input JVP (square layers only survive the shapes)",
        "manual_bp/layers/dense.py",
        "        return _rows_times(T, cache.weight.T)\n",
        "        W = cache.weight\n"
        "        return _rows_times(T, W if W.shape[0] == W.shape[1] else W.T)\n",
        "tests/test_layer_products.py::test_dense_products_match_torch_func",
    ),
    Mutation(
        "PROD.activation.residual",
        "drop σ″: the activation's residual of a GGN",
        "manual_bp/layers/activation.py",
        "        return self.activation.second_vjp(dout, T, cache.input, cache.output), {}\n",
        "        return zero_residual(self, cache, T, T_params)\n",
        "tests/test_layer_products.py::test_activation_products_match_torch_func",
    ),
    Mutation(
        "REG.l2",
        "the lowest layer's fused SGD update forgets L2's shrink of the weight",
        "manual_bp/layers/dense_step.py",
        "gemm(-1.0, x.T, dz.T, shrink, W.T, 0, 1, 1)",
        "gemm(-1.0, x.T, dz.T, 1.0, W.T, 0, 1, 1)",
        "tests/test_fused_lowest_update.py::test_fused_lowest_update_equals_the_unfused_step",
    ),
    Mutation(
        "LAYER.dense",
        "mean instead of sum for ∂C/∂b",
        "manual_bp/layers/dense.py",
        "return dx, dz_rows.T @ x_rows, dz_rows.sum(axis=0)",
        "return dx, dz_rows.T @ x_rows, dz_rows.mean(axis=0)",
        "tests/test_layers.py::test_dense_layer_backward_matches_torch",
    ),
    Mutation(
        "INIT.default",
        "1/n_in instead of 1/√n_in",
        "manual_bp/initializers.py",
        "rng.standard_normal(W.shape) / np.sqrt(W.shape[1])",
        "rng.standard_normal(W.shape) / W.shape[1]",
        "tests/test_training.py::test_default_initializer_statistics",
    ),
    Mutation(
        "REG.l2",
        "λ/2N instead of λ/N in the gradient",
        "manual_bp/regularizers.py",
        "            g += scale * W\n",
        "            g += 0.5 * scale * W\n",
        "tests/test_training.py::test_l2_step_matches_torch_weight_decay",
    ),
    Mutation(
        "REG.l2",
        "decay the biases too",
        "manual_bp/training/loop.py",
        "[params[i] for i in decayed], [grads[i] for i in decayed], x.shape[0]",
        "params, grads, x.shape[0]",
        "tests/test_training.py::test_training_loop_equals_manual_minibatch_steps",
    ),
    Mutation(
        "BP4",
        "fast path: drop the 1/n of the mean cost",
        "manual_bp/training/fused.py",
        "            scale = factor / n_rows\n",
        "            scale = factor\n",
        "tests/test_fast_path.py::test_fast_sgd_l2_steps_match_torch_optim",
    ),
    Mutation(
        "REG.l2",
        "fast path: drop the (1 − ηλ/N) decay",
        "manual_bp/training/fused.py",
        "shrink = 1.0 - lr * reg.lmbda / self.n_train",
        "shrink = 1.0",
        "tests/test_fast_path.py::test_fast_sgd_l2_steps_match_torch_optim",
    ),
    Mutation(
        "OPT.adam",
        "drop the bias correction of v",
        "manual_bp/optimizers/adam.py",
        "            d /= bc2_sqrt\n",
        "",
        "tests/test_optimizers.py::test_adam_trajectory",
    ),
    Mutation(
        "OPT.sgd-nesterov",
        "remove the look-ahead",
        "manual_bp/optimizers/sgd.py",
        "np.multiply(buf, self.momentum, out=d)",
        "np.multiply(buf, 0.0, out=d)",
        "tests/test_optimizers.py::test_sgd_nesterov_trajectory",
    ),
    Mutation(
        "ACT.softmax",
        "diagonal-only Jacobian",
        "manual_bp/activations/normalising.py",
        "return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))",
        "return a * (1 - a) * grad_a",
        "tests/test_activations.py::test_activation_backward_matches_torch",
    ),
    Mutation(
        "COST.quadratic",
        "drop the ½",
        "manual_bp/costs/regression.py",
        'return 0.5 * np.einsum("ij,ij->i", diff, diff)',
        'return np.einsum("ij,ij->i", diff, diff)',
        "tests/test_costs.py::test_cost_value_matches_torch",
    ),
    Mutation(
        "LAYER.residual",
        "drop the skip path from the input gradient",
        "manual_bp/layers/containers.py",
        "return dout + d_branch, named  # both uses of x: the skip path and the branch",
        "return d_branch, named",
        "tests/test_stack.py::test_residual_block_matches_torch",
    ),
    Mutation(
        "STACK.chain",
        "pass a layer's upstream gradient straight through (skip its VJP)",
        "manual_bp/layers/containers.py",
        "        dout, grads[i] = layers[i].backward(dout, caches[i])\n",
        "        dout, grads[i] = layers[i].backward(dout, caches[i]) if i else (dout, {})\n",
        "tests/test_stack.py::test_stack_chain_equals_network_backprop",
    ),
    Mutation(
        "LAYER.batchnorm",
        "treat the batch mean and variance as constants in the backward pass",
        "manual_bp/layers/normalisation.py",
        "    return inv_std * (dx_hat - mean_g - x_hat * mean_gx)",
        "    return inv_std * dx_hat",
        "tests/test_normalisation.py::test_batchnorm_matches_torch",
    ),
    Mutation(
        "LAYER.batchnorm.running",
        "running variance biased",
        "manual_bp/layers/normalisation.py",
        "        unbiased = var * (n / (n - 1))",
        "        unbiased = var",
        "tests/test_normalisation.py::test_running_statistics_match_torch_module",
    ),
    Mutation(
        "LAYER.dropout",
        "skip the mask in the backward pass",
        "manual_bp/layers/dropout.py",
        "        return dout * cache.mask * cache.scale, {}",
        "        return dout * cache.scale, {}",
        "tests/test_dropout.py::test_dropout_matches_torch",
    ),
    Mutation(
        "CONV.input",
        "kernel not flipped in the input gradient",
        "manual_bp/layers/_im2col.py",
        "flipped = weight[:, :, ::-1, ::-1]",
        "flipped = weight",
        "tests/test_convolution.py::test_conv2d_layer_matches_torch",
    ),
    Mutation(
        "LAYER.maxpool2d",
        "the first tap of a window never wins (the first-maximum chain skips ne₀)",
        "manual_bp/layers/pooling_products.py",
        "for tap in range(len(taps) - 2, -1, -1):",
        "for tap in range(len(taps) - 2, 0, -1):",
        "tests/test_pooling.py::test_maxpool2d_matches_torch",
    ),
    Mutation(
        "LSTM.step",
        "swap the input and forget gates",
        "manual_bp/layers/recurrent_cells.py",
        "    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)",
        "    f, i, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)",
        "tests/test_recurrent.py::test_lstm_implementations_agree_and_match_torch",
    ),
    Mutation(
        "LSTM.step",
        "unrolled forward (lstm_forward_fast): the cell update takes the input gate as forget gate",
        "manual_bp/layers/recurrent_fast.py",
        "c = g_t[:, H : 2 * H] * c + g_t[:, :H] * g_t[:, 2 * H : 3 * H]",
        "c = g_t[:, :H] * c + g_t[:, H : 2 * H] * g_t[:, 2 * H : 3 * H]",
        "tests/test_recurrent.py::test_recurrent_matches_torch",
    ),
    Mutation(
        "LSTM.step",
        "training step (LSTMStep): the cell update takes the input gate as forget gate",
        "manual_bp/layers/recurrent_fast.py",
        "np.multiply(f, c[t], out=c[t + 1])",
        "np.multiply(i, c[t], out=c[t + 1])",
        "tests/test_fast_recurrent.py::test_lstm_fast_step_equals_readable_and_torch",
    ),
    Mutation(
        "LAYER.batchnorm",
        "training step (BatchNormStep): the input gradient drops the variance path",
        "manual_bp/layers/normalisation_fast.py",
        "                dyr += scratch[r]\n",
        "",
        "tests/test_fast_normalisation.py::test_batchnorm_step_matches_readable_and_torch",
    ),
    Mutation(
        "ATT.softmax",
        "training step (AttentionStep): the value gradient uses P instead of Pᵀ",
        "manual_bp/layers/attention_fast.py",
        "np.matmul(P.transpose(0, 1, 3, 2), d_heads, out=dv)",
        "np.matmul(P, d_heads, out=dv)",
        "tests/test_fast_attention.py::test_fast_attention_matches_readable_and_torch",
    ),
    Mutation(
        "LAYER.conv2d",
        "training step (ConvStep): the input gradient's product uses W instead of Wᵀ",
        "manual_bp/layers/convolution_fast.py",
        "np.matmul(w_mat.transpose(0, 2, 1), d_mat, out=u_mat)",
        "np.matmul(w_mat.transpose(0, 2, 1) * 1.5, d_mat, out=u_mat)",
        "tests/test_fast_convolution.py::test_step_matches_readable_and_torch",
    ),
    Mutation(
        "LAYER.conv2d",
        "training step (ConvStep), batch-last col2im: the input gradient's product uses W",
        "manual_bp/layers/convolution_fast.py",
        "np.matmul(w_mat.transpose(0, 2, 1), d_bl.reshape(groups, o_g, -1), out=u_mat)",
        "np.matmul(w_mat.transpose(0, 2, 1) * 1.5, d_bl.reshape(groups, o_g, -1), out=u_mat)",
        "tests/test_fast_convolution.py::test_both_forms",
    ),
    Mutation(
        "LAYER.conv2d",
        "training step (ConvStep), stride-phase col2im: a kernel offset's run scaled",
        "manual_bp/layers/convolution_fast.py",
        "np.add(spot, dcols[:, t, : length - shift], out=spot)",
        "np.add(spot, 1.5 * dcols[:, t, : length - shift], out=spot)",
        "tests/test_fast_convolution.py::test_both_forms",
    ),
    Mutation(
        "ATT.sdpa",
        "scale by 1/d instead of 1/√d",
        "manual_bp/layers/attention_sdpa.py",
        "scale = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)",
        "scale = 1.0 / float(q.shape[-1]) if scale is None else float(scale)",
        "tests/test_attention.py::test_sdpa_matches_torch",
    ),
    Mutation(
        "LAYER.maxpool2d",
        "let a padding tap win against an input of −∞",
        "manual_bp/layers/pooling_products.py",
        "index *= differs if inside is None else differs | ~inside[tap]",
        "index *= differs",
        "tests/test_pooling.py::test_maxpool_padding_never_wins_even_against_minus_infinity",
    ),
    Mutation(
        "CONV.fast",
        "weight gradient keeps only the last panel of its reduction",
        "manual_bp/layers/_im2col.py",
        "out += np.matmul(a[:, :, part], b[:, :, part].transpose(0, 2, 1))",
        "out = np.matmul(a[:, :, part], b[:, :, part].transpose(0, 2, 1))",
        "tests/test_convolution.py::test_panelled_gemms_match_torch",
    ),
    Mutation(
        "STACK.chain",
        "the training step's bottom Dense layer doubles its bias gradient",
        "manual_bp/layers/dense.py",
        'return {"weight": dW, "bias": db} if self.has_bias else {"weight": dW}',
        'return {"weight": dW, "bias": 2 * db} if self.has_bias else {"weight": dW}',
        "tests/test_stack.py::test_training_step_skips_only_the_unused_input_gradient",
    ),
    Mutation(
        "TBPTT.chunk",
        "the state is not carried into the next chunk",
        "manual_bp/sequence_training.py",
        "layer.initial_state = tuple(state.copy() for state in cache.final)",
        "layer.initial_state = None",
        "tests/test_sequence_training.py::test_truncated_bptt_matches_torch",
    ),
    Mutation(
        "CURV.kflr",
        "output-side factor B not divided by the batch size",
        "manual_bp/curvature/_kfc.py",
        "return dense_input_factor(inp, bias), flat.T @ flat / n",
        "return dense_input_factor(inp, bias), flat.T @ flat",
        "tests/test_curvature.py::test_kflr_equals_ggn_block_at_batch_one_and_for_deep_linear_networks",
    ),
    Mutation(
        "CURV.hvp",
        "drop the 1/n of the mean cost from the R-pass seed",
        "manual_bp/curvature/rop.py",
        "output_hessian_product(chain, f, y, r) / n",
        "output_hessian_product(chain, f, y, r)",
        "tests/test_curvature.py::test_hessian_columns_are_hessian_vector_products",
    ),
]


def _copy_tree(destination: Path) -> None:
    """The tree with its bytecode: ``copytree`` keeps the sources' mtimes, so the copied
    ``.pyc`` stay valid and the subprocess compiles only the mutated file (written now: a
    new mtime invalidates its ``.pyc``) instead of every module it imports."""
    for name in ("manual_bp", "reference", "tests", "docs"):
        shutil.copytree(ROOT / name, destination / name)
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: f"{m.equation}: {m.what}")
def test_mutation_makes_its_test_fail(mutation: Mutation, tmp_path: Path):
    source = (ROOT / mutation.path).read_text(encoding="utf-8")
    assert source.count(mutation.old) == 1, (
        f"the snippet to break {mutation.equation} is no longer found exactly once in "
        f"{mutation.path}; update MUTATIONS"
    )
    _copy_tree(tmp_path)
    (tmp_path / mutation.path).write_text(
        source.replace(mutation.old, mutation.new), encoding="utf-8"
    )
    environment = {**os.environ, "HYPOTHESIS_PROFILE": "mutation", "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            mutation.test,
            "-x",
            "-q",
            "-p",
            "no:cacheprovider",
            "--no-header",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, (
        f"breaking {mutation.equation} ({mutation.what}) did not make "
        f"{mutation.test} fail (exit {result.returncode}):\n{result.stdout[-2000:]}"
        f"{result.stderr[-2000:]}"
    )


def test_mutated_tree_imports_the_copy(tmp_path: Path):
    """Guard: the subprocess really runs the mutated copy, not an installed manual_bp."""
    _copy_tree(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", "import manual_bp; print(manual_bp.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip().startswith(str(tmp_path)), result.stdout + result.stderr
