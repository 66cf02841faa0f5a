"""Checks of the layer products on a V axis (``docs/products.md``) for ``verify``.

One check per registered layer class: the layer at the input a random stack feeds it
(:func:`reference.layer_cases.layer_case`, the layer in the middle of a stack) with every
product against ``torch.func`` and the identities that tie them
(:func:`reference.products.product_comparisons`); plus dense layers on drawn shapes, every
activation of the catalogue, and the elementwise base class on a layer defined by φ′ and
φ″ alone. The test files draw the same cases with hypothesis (``tests/test_layer_products.py``
and ``tests/test_products_*.py``).
"""

from __future__ import annotations

import numpy as np

from manual_bp.activations import ACTIVATIONS
from manual_bp.layers import LAYERS, ActivationLayer, Dense, ElementwiseLayer
from manual_bp.layers.base import Cache
from reference.checks import register_check
from reference.compare import Comparison
from reference.products import product_comparisons
from reference.stack import register_torch

__all__ = ["Cube", "dense_case"]


class Cube(ElementwiseLayer):
    """``φ(x) = x³``: a nonlinear elementwise layer built only from φ′ and φ″ (not
    registered: what is checked is the base class ``PROD.elementwise``)."""

    product_equations = ("PROD.elementwise", "PROD.elementwise", "PROD.elementwise")

    def forward(self, x):
        return x**3, Cache(x)

    def backward(self, dout, cache):
        return dout * 3 * cache.input**2, {}

    def derivative(self, cache):
        return 3 * cache.input**2

    def second_derivative(self, cache):
        return 6 * cache.input


@register_torch(Cube)
def _cube(layer, params, buffers, x, cache):
    return x**3


def dense_case(rng: np.random.Generator) -> tuple[Dense, np.ndarray]:
    """A dense layer (square half the time) on ``(N, D)`` or ``(N, *, D)`` inputs."""
    n_in, n_out = (int(k) for k in rng.integers(1, 6, size=2))
    if rng.integers(2):
        n_out = n_in  # a transposed product survives every shape check of a square layer
    layer = Dense(n_in, n_out, bias=bool(rng.integers(2)), seed=rng)
    inner = tuple(int(k) for k in rng.integers(1, 4, size=int(rng.integers(0, 3))))
    return layer, rng.standard_normal((int(rng.integers(1, 5)), *inner, n_in))


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    trailing = rng.integers(1, 5, size=int(rng.integers(1, 3)))
    return (int(rng.integers(1, 4)), *(int(k) for k in trailing))


def _layer_check(name: str):
    def check(rng: np.random.Generator) -> list[Comparison]:
        from reference.layer_cases import layer_case  # (imports every checks_* module)

        layer, x = layer_case(name, rng)
        return product_comparisons(layer, x, rng)

    check.__doc__ = f"Every product of a {name} in the middle of a random stack vs torch.func."
    return check


for _name in sorted(c.__name__ for c in LAYERS.classes() if c.products_refusal is None):
    register_check(f"products-{_name}")(_layer_check(_name))


@register_check("products-dense-shapes")
def dense_products_check(rng: np.random.Generator) -> list[Comparison]:
    """Dense products on drawn shapes (square layers, sequences) vs torch.func."""
    layer, x = dense_case(rng)
    return product_comparisons(layer, x, rng)


@register_check("products-activations")
def activation_products_check(rng: np.random.Generator) -> list[Comparison]:
    """An activation layer of a random activation of the catalogue vs torch.func."""
    from reference.checks_components import random_activation  # (imports every checks_*)

    name = str(rng.choice(ACTIVATIONS.names()))
    layer = ActivationLayer(random_activation(rng, name))
    return product_comparisons(layer, 2.0 * rng.standard_normal(_shape(rng)), rng)


@register_check("products-elementwise")
def elementwise_products_check(rng: np.random.Generator) -> list[Comparison]:
    """The elementwise base class: a layer defined by φ′ and φ″ alone vs torch.func."""
    return product_comparisons(Cube(), rng.standard_normal(_shape(rng)), rng)
