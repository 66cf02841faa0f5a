"""``nn.Module`` subclasses to manual_bp through ``torch.fx.symbolic_trace``.

The traced graph is read as a chain: every operation must take the previous result, except
``a + b`` where ``a`` is an earlier result ``x`` and ``b`` the chain's head computed from
``x``, which closes a skip connection: the operations between them become the branch ``f``
of ``Residual(f)``, ``y = x + f(x)`` (equation ``LAYER.residual``). Submodules are kept
as they are; functional calls become their modules (``F.relu`` → ``nn.ReLU``,
``torch.flatten(x, 1)`` → ``nn.Flatten(1)``, ``x.view(x.size(0), …)`` → ``Reshape``, …).
The result is an ``nn.Sequential`` (with :class:`~reference.interop.Residual` blocks) holding
the original submodules, which ``from_torch`` maps layer by layer; its state-dict names are
manual_bp's. Anything else is refused with one line naming the first node that does not fit
and the source line it came from.
"""

from __future__ import annotations

import operator
import os
import re
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from reference.interop_modules import Reshape, Residual

__all__ = ["sequential_from_fx"]


def _act(cls: type[nn.Module], **fixed: Any):
    def build(args: tuple, kwargs: dict) -> nn.Module:
        return cls(*args, **{**kwargs, **fixed})

    return build


def _softmax(cls: type[nn.Module]):
    def build(args: tuple, kwargs: dict) -> nn.Module:
        kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "_stacklevel")}
        return cls(*args[:1], **kwargs)

    return build


def _flatten(args: tuple, kwargs: dict) -> nn.Module:
    start = kwargs.get("start_dim", args[0] if args else 0)
    end = kwargs.get("end_dim", args[1] if len(args) > 1 else -1)
    return nn.Flatten(start, end)


def _named(cls: type[nn.Module], names: tuple[str, ...]):
    """A functional call whose positional options are ordered differently from the module's."""

    def build(args: tuple, kwargs: dict) -> nn.Module:
        return cls(**dict(zip(names, args, strict=False)), **kwargs)

    return build


_MAX_POOL = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")

#: functional form (function or method name) -> builder(extra args, kwargs) of its module
_FUNCTIONS: dict[Any, Any] = {
    F.relu: _act(nn.ReLU), torch.relu: _act(nn.ReLU), "relu": _act(nn.ReLU),
    torch.sigmoid: _act(nn.Sigmoid), F.sigmoid: _act(nn.Sigmoid), "sigmoid": _act(nn.Sigmoid),
    torch.tanh: _act(nn.Tanh), F.tanh: _act(nn.Tanh), "tanh": _act(nn.Tanh),
    F.leaky_relu: _act(nn.LeakyReLU), F.elu: _act(nn.ELU), F.selu: _act(nn.SELU),
    F.gelu: _act(nn.GELU), F.silu: _act(nn.SiLU), F.softplus: _act(nn.Softplus),
    F.hardtanh: _act(nn.Hardtanh),
    F.softmax: _softmax(nn.Softmax), torch.softmax: _softmax(nn.Softmax),
    "softmax": _softmax(nn.Softmax),
    F.log_softmax: _softmax(nn.LogSoftmax), torch.log_softmax: _softmax(nn.LogSoftmax),
    "log_softmax": _softmax(nn.LogSoftmax),
    torch.flatten: _flatten, "flatten": _flatten,
    F.max_pool2d: _named(nn.MaxPool2d, _MAX_POOL), F.avg_pool2d: _act(nn.AvgPool2d),
    F.adaptive_avg_pool2d: _act(nn.AdaptiveAvgPool2d),
}  # fmt: skip
_RESHAPES = ("view", "reshape")
_ADDS = (operator.add, torch.add, "add")


def _where(node: fx.Node) -> str:
    """``file:line: code`` of the innermost user source that made ``node`` (torch's frames
    skipped), or the node's name when the trace kept no stack."""
    lines = (node.stack_trace or "").splitlines()
    torch_dir = os.path.dirname(torch.__file__)
    where = f"node {node.name}"
    for i, line in enumerate(lines):
        found = re.match(r'\s*File "(.+)", line (\d+), in ', line)
        if found and not found.group(1).startswith(torch_dir):
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            code = "" if code.startswith("File ") else f" ({code})"  # no source: <stdin>
            where = f"{found.group(1)}:{found.group(2)}{code}"
    return where


def _refuse(node: fx.Node, why: str) -> ValueError:
    return ValueError(
        f"cannot convert traced node {node.name!r} ({node.op} {_target(node)}) at "
        f"{_where(node)}: {why}"
    )


def _target(node: fx.Node) -> str:
    target = node.target
    return getattr(target, "__name__", None) or str(target)


def _is_batch_size(arg: Any) -> bool:
    """``x.size(0)``, ``x.shape[0]`` or ``len(x)``: the batch size, kept by every reshape."""
    if not isinstance(arg, fx.Node):
        return False
    if arg.op == "call_method" and arg.target == "size":
        return arg.args[1:] == (0,) or arg.kwargs.get("dim") == 0
    if arg.op == "call_function" and arg.target is operator.getitem and arg.args[1] == 0:
        shape = arg.args[0]
        return (
            isinstance(shape, fx.Node)
            and shape.op == "call_function"
            and (shape.target is getattr and shape.args[1] == "shape")
        ) or (isinstance(shape, fx.Node) and shape.op == "call_method" and shape.target == "size")
    return arg.op == "call_function" and arg.target is len


def _is_shape_node(node: fx.Node) -> bool:
    """A node computing sizes, not tensors (consumed by a reshape's arguments)."""
    if node.op == "call_method" and node.target == "size":
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        return True
    if node.op == "call_function" and node.target is len:
        return True
    return (
        node.op == "call_function"
        and node.target is operator.getitem
        and isinstance(node.args[0], fx.Node)
        and _is_shape_node(node.args[0])
    )


def _reshape(node: fx.Node) -> nn.Module:
    sizes = node.args[1:]
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    if not sizes or not (_is_batch_size(sizes[0]) or sizes[0] == -1):
        raise _refuse(node, "a reshape must keep the batch axis first (x.size(0) or -1)")
    rest = sizes[1:]
    if sizes[0] == -1 and -1 in rest:
        raise _refuse(node, "a reshape with -1 for the batch axis must give every other size")
    if not all(isinstance(s, int) for s in rest) or not rest:
        raise _refuse(node, "the per-sample sizes of a reshape must be constant integers")
    return nn.Flatten() if tuple(rest) == (-1,) else Reshape(*rest)


def _tuple_module(module: nn.Module) -> bool:
    return isinstance(module, (nn.RNNBase, nn.MultiheadAttention))


def sequential_from_fx(module: nn.Module) -> nn.Sequential:
    """An ``nn.Sequential`` (with :class:`Residual` blocks) computing what ``module`` does."""
    tracer = fx.Tracer()
    tracer.record_stack_traces = True  # so that a refusal can name the user's source line
    try:
        graph = tracer.trace(module)
        traced = fx.GraphModule(tracer.root, graph)
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{type(module).__name__} cannot be traced by torch.fx.symbolic_trace: {first}"
        ) from None
    graph.eliminate_dead_code()
    items: list[nn.Module] = []  # the chain so far
    position: dict[fx.Node, int] = {}  # chain value -> how many items produce it
    head: fx.Node | None = None
    owners = dict(traced.named_modules())
    for node in graph.nodes:
        if node.op == "placeholder":
            if head is not None:
                raise _refuse(node, "only one input is supported")
            head, position[node] = node, 0
            continue
        if node.op == "output":
            if node.args[0] is not head:
                raise _refuse(node, "the output must be the chain's last result")
            break
        if _is_shape_node(node):
            continue
        if node.op == "get_attr":
            continue  # a tensor attribute: refused below where a chain operation uses it
        tensors = [a for a in node.all_input_nodes if not _is_shape_node(a)]
        if (node.op == "call_function" and node.target in _ADDS) or (
            node.op == "call_method" and node.target == "add"
        ):
            _close_residual(node, tensors, head, items, position)
            head, position[node] = node, len(items)
            continue
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            if source is head and getattr(source, "_tuple_output", False) and node.args[1] == 0:
                position[node], head = position.pop(source), node
                continue
            raise _refuse(node, "indexing is supported only as module(x)[0] of RNNs/attention")
        if node.op == "call_function" and node.target in (torch.cat, torch.concat, torch.stack):
            joined = node.args[0]
            if node.target is torch.stack or len(joined) != 1 or joined[0] is not head:
                raise _refuse(node, "manual_bp has no layer that joins tensors (concatenation)")
            position[node], head = position[head], node  # cat of one tensor: the tensor
            continue
        module_of_node = _module_of(node, owners)  # first: is it an operation we have?
        constants = [a.target for a in tensors if a.op == "get_attr"]
        if constants:
            raise _refuse(node, f"it uses the tensor attribute {constants[0]!r} outside a module")
        if tensors != [head]:
            raise _refuse(node, "its input is not the previous result (a branch manual_bp's "
                          "Sequential cannot express; only x + f(x) closes one)")  # fmt: skip
        items.append(module_of_node)
        head, position[node] = node, len(items)
    return nn.Sequential(*items).train(module.training)


def _module_of(node: fx.Node, owners: dict[str, nn.Module]) -> nn.Module:
    if node.op == "call_module":
        module = owners[node.target]
        if _tuple_module(module):
            if isinstance(module, nn.MultiheadAttention):
                _check_attention_call(node)
            elif len(node.args) > 1 or node.kwargs:
                raise _refuse(node, "an initial hidden state is not supported")
            if [u.target for u in node.users] != [operator.getitem] or any(
                u.args[1] != 0 for u in node.users
            ):
                raise _refuse(node, "only the output sequence (module(x)[0]) may be used")
            node._tuple_output = True  # type: ignore[attr-defined]
            return module  # from_torch maps nn.LSTM/…/nn.MultiheadAttention (self-attention)
        if len(node.args) != 1 or node.kwargs:
            raise _refuse(node, "a module called with more than its input")
        return module
    name = node.target
    if node.op in ("call_function", "call_method"):
        if node.op == "call_method" and name in _RESHAPES:
            return _reshape(node)
        builder = _FUNCTIONS.get(name)
        if builder is not None:
            extra = tuple(a for a in node.args[1:])
            if any(isinstance(a, fx.Node) for a in (*extra, *node.kwargs.values())):
                raise _refuse(node, "its options must be constants")
            return builder(extra, dict(node.kwargs))
        if node.op == "call_function" and name is torch.reshape:
            return _reshape(node)
    raise _refuse(node, "no manual_bp layer computes it")


def _check_attention_call(node: fx.Node) -> None:
    query = node.args[0]
    if node.args[1:3] != (query, query) or len(node.args) > 3:
        raise _refuse(node, "attention is supported as self-attention attn(x, x, x) only")
    extra = {k: v for k, v in node.kwargs.items() if k != "need_weights"}
    if any(v is not None and v is not False for v in extra.values()):
        raise _refuse(node, f"attention options {sorted(extra)} are not supported")


def _close_residual(
    node: fx.Node,
    tensors: list[fx.Node],
    head: fx.Node | None,
    items: list[nn.Module],
    position: dict[fx.Node, int],
) -> None:
    """``x + f(x)``: the items after ``x`` become the branch of one :class:`Residual`."""
    if len(node.args) != 2 or node.kwargs or len(tensors) != 2 or head not in tensors:
        raise _refuse(node, "only the sum of a branch and its input (x + f(x)) is supported")
    skip = tensors[0] if tensors[1] is head else tensors[1]
    if skip is head or skip not in position:
        raise _refuse(node, "only the sum of a branch and its input (x + f(x)) is supported")
    start = position[skip]
    if start == len(items):
        raise _refuse(node, "the branch is empty (x + x)")
    branch = items[start:]
    del items[start:]
    items.append(Residual(*branch))
    for value, at in list(position.items()):
        if at > start:
            del position[value]  # values inside the branch are no longer chain values
