"""minitbt.functional: every differentiable op, forward and backward side by side.

    arith.py   elementwise arithmetic, nonlinearities, matmul, linear
    reduce.py  sum, mean, max, var
    shape.py   reshape, permute, concatenate, stack, split, indexing, embedding
    nn.py      softmax, log_softmax, layer_norm, dropout, losses, attention, copy mixture (fused)

Importing this module also gives Tensor its operators (+, -, *, /, @, **, [...]) and methods.
"""
from minitbt.functional.arith import (abs, add, div, exp, gelu, linear, log, masked_fill, matmul, mul, neg,
                                      pow, relu, sigmoid, sqrt, sub, tanh, where)
from minitbt.functional.nn import (copy_mixture, cross_entropy, dropout, layer_norm, log_softmax, mse_loss,
                                   scaled_dot_product_attention, soft_cross_entropy, softmax)
from minitbt.functional.reduce import max, mean, sum, var
from minitbt.functional.shape import concatenate, embedding, getitem, permute, reshape, split, stack, transpose
from minitbt.functional._util import as_tensor
from minitbt.tensor import Tensor


def _attach():
    """Give Tensor its operators and method forms (x.sum(), x.reshape(...), ...)."""
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(a, b)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(as_tensor(b, like=a), a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(a, b)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(as_tensor(b, like=a), a)
    T.__neg__ = lambda a: neg(a)
    T.__pow__ = lambda a, p: pow(a, p)
    T.__matmul__ = lambda a, b: matmul(a, b)
    T.__rmatmul__ = lambda a, b: matmul(as_tensor(b), a)
    T.__getitem__ = lambda a, i: getitem(a, i)
    for name, fn in dict(sum=sum, mean=mean, max=max, var=var, exp=exp, log=log, sqrt=sqrt, abs=abs,
                         tanh=tanh, relu=relu, sigmoid=sigmoid, gelu=gelu, softmax=softmax,
                         log_softmax=log_softmax, reshape=reshape, permute=permute,
                         transpose=transpose, masked_fill=masked_fill).items():
        setattr(T, name, fn)
    T.T = property(lambda a: transpose(a, -1, -2))


_attach()
