"""Checks of the decoder family's V-axis products (``PROD.transformer.*``, ``TF.cross-products``).

A :class:`TransformerDecoderLayer`, :class:`TransformerDecoder` or :class:`Transformer` with
drawn options (pre/post-norm, relu/gelu, bias, both layouts, unbatched), masks (bool, float,
key padding) and its two inputs in each of the three forms a caller gives them:

* ``"given"``: both inputs, ``(tgt, memory)`` (``(src, tgt)`` for the Transformer): every
  input product is a pair, torch's oracle differentiates both;
* ``"input"``: one input used as both (a stack's form): the products sum the two paths;
* ``"attribute"``: the second input is the layer's attribute, a constant.

Every product is compared with ``torch.func`` over torch's module in float64
(:func:`reference.products.product_comparisons`, random vectors), with the adjoint,
per-sample and symmetry identities. The memory's input products (the second input of a
decoder, where the cross-attention's key and value paths meet and every layer's share is
summed) are also filed under ``TF.cross-products``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from manual_bp.layers import Transformer, TransformerDecoder, TransformerDecoderLayer
from reference import checks_transformer as tf  # read at call time: checks modules
from reference.checks import register_check  # import each other through reference.checks
from reference.compare import Comparison
from reference.products import product_comparisons

__all__ = ["DECODERS", "FORMS", "decoder_product_comparisons", "draw_decoder_case"]

DECODERS = (TransformerDecoderLayer, TransformerDecoder, Transformer)
FORMS = ("given", "input", "attribute")


def _second(layer: Any) -> str:
    """The attribute holding the second input: a decoder's memory, a Transformer's tgt."""
    return "tgt" if isinstance(layer, Transformer) else "memory"


def draw_decoder_case(rng: np.random.Generator, cls: type, form: str) -> dict[str, Any]:
    """A ``cls`` with drawn options, its inputs in ``form``, masks and torch's call."""
    # d_model ≥ 2: a layer norm of one feature has exactly-zero gradients (torch: noise)
    layer = tf.draw_layer(rng, cls, d_model=2 * int(rng.integers(1, 3)) + int(rng.integers(2)))
    if rng.integers(2):
        layer.eval()
    case = tf.transformer_case(layer, rng)
    while form == "input" and case["inputs"][0].shape != case["inputs"][1].shape:
        case = tf.transformer_case(layer, rng)  # one input used as both: equal lengths
    first, second = case["inputs"]
    kwargs = dict(case["kwargs"])
    if form == "input":
        second = first
    torch_kwargs = {k: tf._tensor(v) for k, v in kwargs.items()}
    if form == "given":
        x = (first, second)

        def oracle(params, a, b):
            return tf.torch_transformer_call(layer, params, a, b, **torch_kwargs)

    else:
        x = first
        constant = tf._tensor(second)
        if form == "attribute":
            setattr(layer, _second(layer), second)

        def oracle(params, a):
            return tf.torch_transformer_call(
                layer, params, a, a if form == "input" else constant, **torch_kwargs
            )

    batched = first.ndim == 3
    axis = (0 if layer.batch_first else 1) if batched else None
    return {"layer": layer, "x": x, "kwargs": kwargs, "oracle": oracle, "batch_axis": axis}


def decoder_product_comparisons(rng: np.random.Generator, cls: type, form: str) -> list[Comparison]:
    """Every product of a drawn ``cls`` in ``form`` against ``torch.func`` (module docstring);
    the memory's input products again under ``TF.cross-products``."""
    case = draw_decoder_case(rng, cls, form)
    layer = case["layer"]
    try:
        found = product_comparisons(
            layer, case["x"], rng, kwargs=case["kwargs"], oracle=case["oracle"],
            batch_axis=case["batch_axis"],
        )  # fmt: skip
    finally:
        setattr(layer, _second(layer), None)
    if form != "given" or cls is Transformer:
        return found
    memory = [c for c in found if "[input 1]" in c.name]
    return found + [
        Comparison("TF.cross-products", f"memory: {c.name}", c.actual, c.expected, c.scale)
        for c in memory
    ]


@register_check("transformer-decoder-products")
def decoder_products_check(rng: np.random.Generator) -> list[Comparison]:
    """PROD.transformer.* of TransformerDecoderLayer, TransformerDecoder and Transformer with
    both inputs given, one input used as both, or the second a constant attribute; masks,
    layouts and options drawn; TF.cross-products: the memory's products."""
    cls = DECODERS[int(rng.integers(len(DECODERS)))]
    return decoder_product_comparisons(rng, cls, FORMS[int(rng.integers(len(FORMS)))])


@register_check("transformer-cross-products")
def cross_products_check(rng: np.random.Generator) -> list[Comparison]:
    """TF.cross-products: a decoder layer or stack with its memory given (the memory's
    products: key and value paths, summed over the layers) against torch.func."""
    cls = DECODERS[int(rng.integers(2))]
    return decoder_product_comparisons(rng, cls, "given")
