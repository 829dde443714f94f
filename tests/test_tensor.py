"""The Tensor and its backward(): accumulation, no_grad, broadcasting, deep graphs, errors."""
import numpy as np
import pytest

import minitbt as mt
from minitbt import Tensor, no_grad
from minitbt import functional as F


def leaf(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).uniform(0.5, 1.5, shape), requires_grad=True)


def test_dtypes_of_construction():
    assert Tensor([1.0, 2.0]).dtype == np.float32               # Python floats -> float32
    assert Tensor(np.zeros(2)).dtype == np.float64              # a float64 array is kept (gradient checks)
    assert Tensor(np.zeros(2, np.float16)).dtype == np.float32
    assert Tensor([1, 2]).dtype.kind == "i"
    with pytest.raises(TypeError, match="floating-point"):
        Tensor([1, 2], requires_grad=True)


def test_gradients_accumulate_across_two_backward_calls():
    x = leaf(3)
    y = (x * x).sum()
    y.backward()
    first = x.grad.copy()
    np.testing.assert_allclose(first, 2 * x.data)
    y.backward()                                                 # same graph again: adds up
    np.testing.assert_allclose(x.grad, 2 * first)
    (3 * x).sum().backward()                                     # a new graph: adds up too
    np.testing.assert_allclose(x.grad, 2 * first + 3)
    assert x.grad is not first
    x.zero_grad()
    assert x.grad is None


def test_leaf_gradient_is_a_private_copy():
    """y = a + b hands the same upstream array to both inputs; each .grad must be its own array."""
    a, b = leaf(4), leaf(4, seed=1)
    (a + b).backward(np.ones(4))
    assert a.grad is not b.grad
    a.grad *= 10                                                 # e.g. gradient clipping in place
    np.testing.assert_array_equal(b.grad, np.ones(4))


def test_gradient_of_a_reused_input_sums_all_paths():
    x = leaf(2, 3)
    y = x * 2 + x * x + x.exp() + x                              # four uses of x
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 + 2 * x.data + np.exp(x.data) + 1)


def test_no_grad_builds_no_graph():
    x = leaf(3)
    with no_grad():
        y = (x * 2).sum()
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()
    assert not y.requires_grad and y._parents == ()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()
    z = (x * 2).sum()                                            # enabled again afterwards
    assert z.requires_grad


def test_no_grad_restores_state_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert mt.is_grad_enabled()


def _sum_to(values, shape, full):
    """Sum ``values`` (of shape full) over the copies of each element of an array of ``shape``."""
    owner = np.broadcast_to(np.arange(int(np.prod(shape))).reshape(shape), full).ravel()
    return np.bincount(owner, weights=values.ravel(), minlength=int(np.prod(shape))).reshape(shape)


@pytest.mark.parametrize("sa, sb", [((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (2, 3)), ((), (2, 2))])
def test_broadcasting_gradients_have_the_input_shapes(sa, sb):
    a, b = leaf(*sa), leaf(*sb, seed=1)
    out = a * b + a - b
    out.sum().backward()
    assert a.grad.shape == sa and b.grad.shape == sb
    full = np.broadcast_shapes(sa, sb)
    # d/da sum(a b + a - b) = b + 1 and d/db = a - 1, summed over every broadcast copy
    np.testing.assert_allclose(a.grad, _sum_to(np.broadcast_to(b.data + 1, full), sa, full))
    np.testing.assert_allclose(b.grad, _sum_to(np.broadcast_to(a.data - 1, full), sb, full))


def test_deep_graph_has_no_recursion_error():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0001 ** 10_000], rtol=1e-9)


def test_detach_cuts_the_graph_and_shares_data():
    x = leaf(3)
    d = x.detach()
    assert not d.requires_grad and d._parents == ()
    assert np.shares_memory(d.data, x.data)
    y = (x * d).sum()                                            # d acts as a constant
    y.backward()
    np.testing.assert_allclose(x.grad, x.data)


def test_backward_on_non_scalar_needs_a_gradient():
    x = leaf(2, 3)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    with pytest.raises(ValueError, match="does not match"):
        y.backward(np.ones((3, 2)))
    y.backward(np.full((2, 3), 0.5))
    np.testing.assert_allclose(x.grad, np.ones((2, 3)))


def test_reflected_operators():
    x = leaf(3)
    y = 2.0 - x                                                  # __rsub__
    np.testing.assert_allclose(y.data, 2.0 - x.data)
    z = 3.0 / x                                                  # __rtruediv__
    np.testing.assert_allclose(z.data, 3.0 / x.data)
    (y + z).sum().backward()
    np.testing.assert_allclose(x.grad, -1.0 - 3.0 / x.data ** 2)
    assert y.dtype == np.float64 and z.dtype == np.float64      # a Python scalar takes the tensor's dtype
    w = Tensor(np.ones(3, np.float32))
    assert (1.0 - w).dtype == np.float32 and (2.0 / w).dtype == np.float32 and (2 * w).dtype == np.float32


def test_ndarray_on_the_left_defers_to_tensor():
    x = leaf(2, 2)
    a = np.arange(4.0).reshape(2, 2)
    for out, ref in [(a - x, a - x.data), (a / x, a / x.data), (a @ x, a @ x.data), (a + x, a + x.data)]:
        assert isinstance(out, Tensor)
        np.testing.assert_allclose(out.data, ref)
    (a @ x).sum().backward()
    np.testing.assert_allclose(x.grad, a.T @ np.ones((2, 2)))


def test_method_forms_and_T():
    x = leaf(2, 3)
    np.testing.assert_allclose(x.T.data, x.data.T)
    np.testing.assert_allclose(x.sum(axis=1).data, x.data.sum(1))
    np.testing.assert_allclose(x.reshape(3, 2).data, x.data.reshape(3, 2))
    np.testing.assert_allclose(x.softmax().data.sum(-1), 1.0)
    assert x[0, 1].item() == x.data[0, 1]


def test_op_outputs_do_not_require_grad_without_grad_inputs():
    a = Tensor(np.ones(3))
    y = F.exp(a) * 2
    assert not y.requires_grad and y._backward is None
