"""Recurrent cells: one step ``(carry, inputs) -> (new_carry, outputs)``.

Every cell has ``initialize_carry(rng, input_shape)``, which builds the initial carry
for inputs of ``input_shape`` (batch axes, then ``num_feature_axes`` feature axes),
and a ``num_feature_axes`` property. Parameter names follow Linen, so checkpoints
transfer: LSTM cells have input kernels ``ii, if, ig, io`` (no bias) and hidden Dense
layers ``hi, hf, hg, ho`` (with bias); ``GRUCell`` has ``ir, iz, in`` (bias), ``hr, hz``
(no bias) and ``hn`` (bias). Recurrent kernels default to ``orthogonal()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax import random

from flaxlike.linen import initializers
from flaxlike.linen.activation import sigmoid, tanh
from flaxlike.linen.dtypes import promote_dtype
from flaxlike.linen.linear import Conv, Dense, default_kernel_init
from flaxlike.linen.module import Module, compact, nowrap
from flaxlike.typing import Array, Dtype, Initializer, PrecisionLike, PRNGKey

_default_recurrent_init = initializers.orthogonal()


class RNNCellBase(Module):
  """Base class of recurrent cells.

  Subclasses implement ``__call__(carry, inputs) -> (new_carry, outputs)``,
  ``initialize_carry(rng, input_shape)`` and ``num_feature_axes``.

  Example:

  >>> import flaxlike as nn
  >>> issubclass(nn.LSTMCell, nn.RNNCellBase)
  True
  """

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> Any:
    """The initial carry for inputs of shape ``input_shape``."""
    raise NotImplementedError(f'{type(self).__name__} must implement initialize_carry.')

  @property
  def num_feature_axes(self) -> int:
    """How many trailing input axes are feature axes (the rest are batch axes)."""
    raise NotImplementedError(f'{type(self).__name__} must implement num_feature_axes.')


def _pair_carry(cell: Any, rng: PRNGKey, mem_shape: tuple[int, ...]) -> tuple[Array, Array]:
  key_c, key_h = random.split(rng)
  return (
    cell.carry_init(key_c, mem_shape, cell.param_dtype),
    cell.carry_init(key_h, mem_shape, cell.param_dtype),
  )


class LSTMCell(RNNCellBase):
  r"""A long short-term memory cell.

  With ``x`` the input and ``(c, h)`` the carry::

    i = gate_fn(ii(x) + hi(h))         f = gate_fn(if(x) + hf(h))
    g = activation_fn(ig(x) + hg(h))   o = gate_fn(io(x) + ho(h))
    c' = f * c + i * g                 h' = o * activation_fn(c')

  and the output is ``h'``.

  Attributes:
    features: the size of ``c`` and ``h``.
    gate_fn: the gates' activation.
    activation_fn: the activation of the candidate and of the output.
    kernel_init: initializer of the input kernels.
    recurrent_kernel_init: initializer of the hidden kernels.
    bias_init: initializer of the hidden biases.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of ``c`` and ``h`` in ``initialize_carry``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.LSTMCell(features=3)
  >>> x = jnp.ones((2, 4))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> list(variables['params'])
  ['ii', 'hi', 'if', 'hf', 'ig', 'hg', 'io', 'ho']
  >>> (c, h), y = cell.apply(variables, carry, x)
  >>> h.shape
  (2, 3)
  """

  features: int
  gate_fn: Callable[..., Any] = sigmoid
  activation_fn: Callable[..., Any] = tanh
  kernel_init: Initializer = default_kernel_init
  recurrent_kernel_init: Initializer = _default_recurrent_init
  bias_init: Initializer = initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()

  @compact
  def __call__(
    self, carry: tuple[Array, Array], inputs: Array
  ) -> tuple[tuple[Array, Array], Array]:
    """One step: ``((c, h), x) -> ((c', h'), h')``."""
    c, h = carry
    n = h.shape[-1]

    def gate(name: str, fn: Callable[..., Any]) -> Array:
      x_part = Dense(
        n,
        use_bias=False,
        kernel_init=self.kernel_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f'i{name}',
      )(inputs)
      h_part = Dense(
        n,
        use_bias=True,
        kernel_init=self.recurrent_kernel_init,
        bias_init=self.bias_init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=f'h{name}',
      )(h)
      return fn(x_part + h_part)

    i = gate('i', self.gate_fn)
    f = gate('f', self.gate_fn)
    g = gate('g', self.activation_fn)
    o = gate('o', self.gate_fn)
    new_c = f * c + i * g
    new_h = o * self.activation_fn(new_c)
    return (new_c, new_h), new_h

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """Zeros (by default) ``(c, h)`` of shape ``(*batch, features)``."""
    return _pair_carry(self, rng, tuple(input_shape[:-1]) + (self.features,))

  @property
  def num_feature_axes(self) -> int:
    return 1


class DenseParams(Module):
  """Declares a Dense layer's ``kernel`` and ``bias`` and returns them without applying them.

  Used by ``OptimizedLSTMCell`` to fuse the four gates into one matmul.

  Attributes:
    features: the number of output features.
    use_bias: whether to declare a bias.
    param_dtype: the dtype of the parameters.
    precision: unused; kept for signature compatibility with Linen.
    kernel_init: initializer of ``kernel``.
    bias_init: initializer of ``bias``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> from flaxlike.linen.recurrent import DenseParams
  >>> (k, b), _ = DenseParams(3).init_with_output(jax.random.key(0), jnp.ones((1, 2)))
  >>> k.shape, b.shape
  ((2, 3), (3,))
  """

  features: int
  use_bias: bool = True
  param_dtype: Dtype = jnp.float32
  precision: PrecisionLike = None
  kernel_init: Initializer = default_kernel_init
  bias_init: Initializer = initializers.zeros_init()

  @compact
  def __call__(self, inputs: Array) -> tuple[Array, Array | None]:
    """Returns ``(kernel, bias or None)`` for inputs with ``inputs.shape[-1]`` features."""
    kernel = self.param(
      'kernel', self.kernel_init, (inputs.shape[-1], self.features), self.param_dtype
    )
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    return kernel, bias


_GATES = ('i', 'f', 'g', 'o')


class OptimizedLSTMCell(RNNCellBase):
  """An LSTM cell computing its four gates with one matmul for the input and one for the
  hidden state. Same equations, parameters and names as ``LSTMCell``.

  Attributes:
    features: the size of ``c`` and ``h``.
    gate_fn: the gates' activation.
    activation_fn: the activation of the candidate and of the output.
    kernel_init: initializer of the input kernels.
    recurrent_kernel_init: initializer of the hidden kernels.
    bias_init: initializer of the hidden biases.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of ``c`` and ``h`` in ``initialize_carry``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.OptimizedLSTMCell(features=3)
  >>> x = jnp.ones((2, 4))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> jax.tree_util.tree_map(jnp.shape, variables['params']['hi'])
  {'bias': (3,), 'kernel': (3, 3)}
  """

  features: int
  gate_fn: Callable[..., Any] = sigmoid
  activation_fn: Callable[..., Any] = tanh
  kernel_init: Initializer = default_kernel_init
  recurrent_kernel_init: Initializer = _default_recurrent_init
  bias_init: Initializer = initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()

  @compact
  def __call__(
    self, carry: tuple[Array, Array], inputs: Array
  ) -> tuple[tuple[Array, Array], Array]:
    """One step: ``((c, h), x) -> ((c', h'), h')``."""
    c, h = carry
    n = h.shape[-1]
    params_i, params_h = [], []
    for gate in _GATES:
      params_i.append(
        DenseParams(
          n,
          use_bias=False,
          param_dtype=self.param_dtype,
          kernel_init=self.kernel_init,
          bias_init=self.bias_init,
          name=f'i{gate}',
        )(inputs)
      )
      params_h.append(
        DenseParams(
          n,
          use_bias=True,
          param_dtype=self.param_dtype,
          kernel_init=self.recurrent_kernel_init,
          bias_init=self.bias_init,
          name=f'h{gate}',
        )(h)
      )
    zh = self._fused(h, params_h)
    zi = self._fused(inputs, params_i)
    i = self.gate_fn(zh[0] + zi[0])
    f = self.gate_fn(zh[1] + zi[1])
    g = self.activation_fn(zh[2] + zi[2])
    o = self.gate_fn(zh[3] + zi[3])
    new_c = f * c + i * g
    new_h = o * self.activation_fn(new_c)
    return (new_c, new_h), new_h

  @nowrap
  def _fused(self, x: Array, params: list[tuple[Array, Array | None]]) -> list[Array]:
    """One matmul for all gates, split back into per-gate pre-activations."""
    kernels = [k for k, _ in params]
    kernel = jnp.concatenate(kernels, axis=-1)
    biases = [b for _, b in params]
    # Every gate has a bias or none has.
    present = [b for b in biases if b is not None]
    bias = jnp.concatenate(present, axis=-1) if present else None
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jnp.dot(x, kernel)
    if bias is not None:
      y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))
    sizes = np.cumsum([k.shape[-1] for k in kernels[:-1]])
    return jnp.split(y, sizes, axis=-1)

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """Zeros (by default) ``(c, h)`` of shape ``(*batch, features)``."""
    return _pair_carry(self, rng, tuple(input_shape[:-1]) + (self.features,))

  @property
  def num_feature_axes(self) -> int:
    return 1


class SimpleCell(RNNCellBase):
  """An Elman cell: ``h' = activation_fn(i(x) + h(h) [+ h])``; the output is ``h'``.

  Parameters: ``i`` (Dense with bias) and ``h`` (recurrent Dense without bias).

  Attributes:
    features: the size of the carry.
    activation_fn: the activation.
    kernel_init: initializer of the input kernel.
    recurrent_kernel_init: initializer of the recurrent kernel.
    bias_init: initializer of the input bias.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of the carry in ``initialize_carry``.
    residual: add the previous carry before the activation.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.SimpleCell(features=3)
  >>> x = jnp.ones((2, 4))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> list(variables['params'])
  ['i', 'h']
  """

  features: int
  activation_fn: Callable[..., Any] = tanh
  kernel_init: Initializer = default_kernel_init
  recurrent_kernel_init: Initializer = _default_recurrent_init
  bias_init: Initializer = initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()
  residual: bool = False

  @compact
  def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
    """One step: ``(h, x) -> (h', h')``."""
    n = carry.shape[-1]
    new_carry = Dense(
      n,
      use_bias=True,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.kernel_init,
      bias_init=self.bias_init,
      name='i',
    )(inputs)
    new_carry = new_carry + Dense(
      n,
      use_bias=False,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.recurrent_kernel_init,
      name='h',
    )(carry)
    if self.residual:
      new_carry = new_carry + carry
    new_carry = self.activation_fn(new_carry)
    return new_carry, new_carry

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> Array:
    """Zeros (by default) of shape ``(*batch, features)``."""
    return self.carry_init(rng, tuple(input_shape[:-1]) + (self.features,), self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class GRUCell(RNNCellBase):
  r"""A gated recurrent unit cell.

  With ``x`` the input and ``h`` the carry::

    r = gate_fn(ir(x) + hr(h))
    z = gate_fn(iz(x) + hz(h))
    n = activation_fn(in(x) + r * hn(h))
    h' = (1 - z) * n + z * h

  and the output is ``h'``. ``ir, iz, in`` and ``hn`` have biases; ``hr, hz`` do not.

  Attributes:
    features: the size of the carry.
    gate_fn: the gates' activation.
    activation_fn: the candidate's activation.
    kernel_init: initializer of the input kernels.
    recurrent_kernel_init: initializer of the hidden kernels.
    bias_init: initializer of the biases.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of the carry in ``initialize_carry``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.GRUCell(features=3)
  >>> x = jnp.ones((2, 4))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> list(variables['params'])
  ['ir', 'hr', 'iz', 'hz', 'in', 'hn']
  """

  features: int
  gate_fn: Callable[..., Any] = sigmoid
  activation_fn: Callable[..., Any] = tanh
  kernel_init: Initializer = default_kernel_init
  recurrent_kernel_init: Initializer = _default_recurrent_init
  bias_init: Initializer = initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()

  @compact
  def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
    """One step: ``(h, x) -> (h', h')``."""
    h = carry
    n = h.shape[-1]

    def dense_i(name: str) -> Array:
      return Dense(
        n,
        use_bias=True,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.kernel_init,
        bias_init=self.bias_init,
        name=name,
      )(inputs)

    def dense_h(name: str, use_bias: bool = False) -> Array:
      return Dense(
        n,
        use_bias=use_bias,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.recurrent_kernel_init,
        bias_init=self.bias_init,
        name=name,
      )(h)

    r = self.gate_fn(dense_i('ir') + dense_h('hr'))
    z = self.gate_fn(dense_i('iz') + dense_h('hz'))
    cand = self.activation_fn(dense_i('in') + r * dense_h('hn', use_bias=True))
    new_h = (1.0 - z) * cand + z * h
    return new_h, new_h

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> Array:
    """Zeros (by default) of shape ``(*batch, features)``."""
    return self.carry_init(rng, tuple(input_shape[:-1]) + (self.features,), self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class MGUCell(RNNCellBase):
  r"""A minimal gated unit cell.

  With ``x`` the input and ``h`` the carry::

    f = gate_fn(if(x) + hf(h))
    n = activation_fn(in(x) + f * hn(h))     # without "f *" when reset_gate=False
    h' = (1 - f) * n + f * h

  and the output is ``h'``. ``if`` and ``in`` have biases, ``hf`` does not, ``hn`` has
  one only with ``reset_gate``.

  Attributes:
    features: the size of the carry.
    gate_fn: the forget gate's activation.
    activation_fn: the candidate's activation.
    kernel_init: initializer of the input kernels.
    recurrent_kernel_init: initializer of the hidden kernels.
    forget_bias_init: initializer of the ``if`` bias (ones: remember by default).
    activation_bias_init: initializer of the ``in`` and ``hn`` biases.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of the carry in ``initialize_carry``.
    reset_gate: multiply ``hn(h)`` by the forget gate.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.MGUCell(features=3)
  >>> x = jnp.ones((2, 4))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> list(variables['params'])
  ['if', 'hf', 'hn', 'in']
  """

  features: int
  gate_fn: Callable[..., Any] = sigmoid
  activation_fn: Callable[..., Any] = tanh
  kernel_init: Initializer = default_kernel_init
  recurrent_kernel_init: Initializer = _default_recurrent_init
  forget_bias_init: Initializer = initializers.ones_init()
  activation_bias_init: Initializer = initializers.zeros_init()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()
  reset_gate: bool = True

  @compact
  def __call__(self, carry: Array, inputs: Array) -> tuple[Array, Array]:
    """One step: ``(h, x) -> (h', h')``."""
    h = carry
    n = h.shape[-1]
    f = self.gate_fn(
      Dense(
        n,
        use_bias=True,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.kernel_init,
        bias_init=self.forget_bias_init,
        name='if',
      )(inputs)
      + Dense(
        n,
        use_bias=False,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.recurrent_kernel_init,
        bias_init=self.activation_bias_init,
        name='hf',
      )(h)
    )
    x = Dense(
      n,
      use_bias=self.reset_gate,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      kernel_init=self.recurrent_kernel_init,
      bias_init=self.activation_bias_init,
      name='hn',
    )(h)
    if self.reset_gate:
      x = x * f
    cand = self.activation_fn(
      Dense(
        n,
        use_bias=True,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        kernel_init=self.kernel_init,
        bias_init=self.activation_bias_init,
        name='in',
      )(inputs)
      + x
    )
    new_h = (1.0 - f) * cand + f * h
    return new_h, new_h

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> Array:
    """Zeros (by default) of shape ``(*batch, features)``."""
    return self.carry_init(rng, tuple(input_shape[:-1]) + (self.features,), self.param_dtype)

  @property
  def num_feature_axes(self) -> int:
    return 1


class ConvLSTMCell(RNNCellBase):
  r"""A convolutional LSTM cell (Shi et al., 2015).

  The gates come from two convolutions with ``4 * features`` output channels, ``ih`` of
  the input and ``hh`` of ``h``, split into ``i, g, f, o``::

    c' = sigmoid(f + 1) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

  Inputs are ``(*batch, *spatial, channels)``; the carry is ``(*batch, *spatial,
  features)``.

  Attributes:
    features: the number of carry channels.
    kernel_size: the convolution window (one entry per spatial axis).
    strides: the convolution strides.
    padding: the convolution padding.
    use_bias: whether the convolutions have biases.
    dtype: the computation dtype (None: promoted from inputs and params).
    param_dtype: the dtype of parameters and of the initial carry.
    carry_init: initializer of ``c`` and ``h`` in ``initialize_carry``.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> cell = nn.ConvLSTMCell(features=2, kernel_size=(3, 3))
  >>> x = jnp.ones((1, 5, 5, 3))
  >>> carry = cell.initialize_carry(jax.random.key(0), x.shape)
  >>> carry[0].shape
  (1, 5, 5, 2)
  >>> variables = cell.init(jax.random.key(1), carry, x)
  >>> variables['params']['ih']['kernel'].shape
  (3, 3, 3, 8)
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] | None = None
  padding: str | Sequence[tuple[int, int]] = 'SAME'
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  carry_init: Initializer = initializers.zeros_init()

  @compact
  def __call__(
    self, carry: tuple[Array, Array], inputs: Array
  ) -> tuple[tuple[Array, Array], Array]:
    """One step: ``((c, h), x) -> ((c', h'), h')``."""
    c, h = carry

    def conv(name: str) -> Conv:
      return Conv(
        features=4 * self.features,
        kernel_size=self.kernel_size,
        strides=self.strides,
        padding=self.padding,
        use_bias=self.use_bias,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        name=name,
      )

    gates = conv('ih')(inputs) + conv('hh')(h)
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    f = sigmoid(f + 1)
    new_c = f * c + sigmoid(i) * jnp.tanh(g)
    new_h = sigmoid(o) * jnp.tanh(new_c)
    return (new_c, new_h), new_h

  @nowrap
  def initialize_carry(self, rng: PRNGKey, input_shape: tuple[int, ...]) -> tuple[Array, Array]:
    """Zeros (by default) ``(c, h)`` of shape ``(*batch, *spatial, features)``."""
    k = self.num_feature_axes
    mem_shape = tuple(input_shape[:-k]) + tuple(input_shape[-k:-1]) + (self.features,)
    return _pair_carry(self, rng, mem_shape)

  @property
  def num_feature_axes(self) -> int:
    return len(self.kernel_size) + 1


__all__ = [
  'RNNCellBase',
  'LSTMCell',
  'OptimizedLSTMCell',
  'GRUCell',
  'MGUCell',
  'SimpleCell',
  'ConvLSTMCell',
  'DenseParams',
  'RNN',
  'Bidirectional',
  'RNNBase',
  'flip_sequences',
]
# _rnn builds on the cells above and imports this module, so its names come in last.
from flaxlike.linen._rnn import RNN as RNN  # noqa: E402
from flaxlike.linen._rnn import Bidirectional as Bidirectional  # noqa: E402
from flaxlike.linen._rnn import RNNBase as RNNBase  # noqa: E402
from flaxlike.linen._rnn import flip_sequences as flip_sequences  # noqa: E402
