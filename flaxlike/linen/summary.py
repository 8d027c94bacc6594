"""Model summaries: ``nn.tabulate`` and ``Module.tabulate`` render a plain-text table.

One row per module call (in call order): its path, class, input and output shapes,
optionally its FLOPs, and one column per variable collection listing the module's own
variables and their count and size. Only shapes are computed (``jax.eval_shape``), so a
summary of a large model costs a trace, not a forward pass. No dependency beyond JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from flaxlike.core.scope import DenyList, Filter
from flaxlike.linen._module.context import intercept_methods

if TYPE_CHECKING:
  # Module.tabulate imports this file, so the class is only named in annotations here.
  from flaxlike.linen.module import Module


@dataclasses.dataclass
class _Row:
  path: tuple[str, ...]
  module_type: str
  method: str
  inputs: Any
  outputs: Any
  module: Module | None = None
  flops: float | None = None
  vjp_flops: float | None = None


def _shape_repr(x: Any) -> str:
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):
    dims = ','.join(str(d) for d in x.shape)
    return f'{np.dtype(x.dtype).name if not str(x.dtype).startswith("key") else x.dtype}[{dims}]'
  return repr(x)


def _tree_repr(tree: Any) -> str:
  """One line per leaf: arrays as ``dtype[shape]``, containers by key."""
  if isinstance(tree, (tuple, list)):
    if len(tree) == 1:
      return _tree_repr(tree[0])
    return '\n'.join(f'- {_tree_repr(x)}'.replace('\n', '\n  ') for x in tree)
  if isinstance(tree, Mapping):
    return '\n'.join(f'{k}: {_tree_repr(v)}'.replace('\n', '\n  ') for k, v in tree.items())
  return _shape_repr(tree)


def _bytes_repr(num_bytes: int) -> str:
  for limit, unit in ((1e9, 'GB'), (1e6, 'MB'), (1e3, 'KB')):
    if num_bytes > limit:
      return f'{num_bytes / limit:,.1f} {unit}'
  return f'{num_bytes:,} B'


def _size_repr(leaves: Sequence[Any]) -> str:
  count = sum(int(np.prod(x.shape)) for x in leaves)
  size = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  return f'{count:,} ({_bytes_repr(size)})'


def _collection_leaves(tree: Any) -> list[Any]:
  return [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, 'shape')]


def _subtree(variables: Mapping[str, Any], col: str, path: tuple[str, ...]) -> Any:
  node = variables.get(col)
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node


def _own_variables(node: Any, child_names: set[str]) -> dict[str, Any]:
  if not isinstance(node, Mapping):
    return {}
  return {k: v for k, v in node.items() if k not in child_names}


def _flops(fn: Callable[..., Any], *args: Any) -> float:
  analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float((analysis or {}).get('flops', 0.0))


def _call_flops(row: _Row, variables: Mapping[str, Any], rngs: Any, vjp: bool) -> float:
  """FLOPs of one module call run on its own variables (and of its VJP when asked)."""
  module = row.module
  assert module is not None
  own = {}
  for col in variables:
    sub = _subtree(variables, col, row.path)
    if isinstance(sub, Mapping):
      own[col] = sub
  args, kwargs = row.inputs

  def call(own_vars, call_args):
    # Mutable, so layers that update statistics (BatchNorm in training) can run.
    out, _ = module.apply(
      own_vars, *call_args, rngs=rngs, method=row.method, mutable=True, **kwargs
    )
    return out

  if not vjp:
    return _flops(call, own, args)

  def with_vjp(own_vars, call_args):
    out, pullback = jax.vjp(call, own_vars, call_args)
    return pullback(out)

  return _flops(with_vjp, own, args)


def _collect(
  module: Module, rngs: Any, args: tuple, kwargs: dict, mutable: Filter
) -> tuple[list[_Row], Any]:
  rows: list[_Row] = []

  def record(next_fun, call_args, call_kwargs, ctx):
    out = next_fun(*call_args, **call_kwargs)
    mod = ctx.module
    # setup only builds submodules; as in Linen, rows are the calls that take inputs.
    if mod.scope is not None and ctx.method_name != 'setup':
      abstract = lambda t: jax.tree_util.tree_map(  # noqa: E731
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, 'dtype') else x, t
      )
      row = _Row(
        path=mod.scope.path,
        module_type=type(mod).__name__,
        method=ctx.method_name,
        inputs=(abstract(call_args), abstract(call_kwargs)),
        outputs=abstract(out),
        module=mod.clone(parent=None, _deep_clone=True),
      )
      rows.append(row)
    return out

  # Rows are appended when calls return; remember start order to list parents first.
  order: list[tuple[tuple[str, ...], str]] = []

  def record_start(next_fun, call_args, call_kwargs, ctx):
    if ctx.module.scope is not None and ctx.method_name != 'setup':
      order.append((ctx.module.scope.path, ctx.method_name))
    return next_fun(*call_args, **call_kwargs)

  with intercept_methods(record), intercept_methods(record_start):
    variables = jax.eval_shape(lambda r: module.init(r, *args, mutable=mutable, **kwargs), rngs)
  position = {key: i for i, key in reversed(list(enumerate(order)))}
  rows.sort(key=lambda r: position.get((r.path, r.method), len(order)))
  return rows, variables


def _render(title: str, headers: list[str], body: list[list[str]], footer: list[str]) -> str:
  """Draws a box table; cells may hold several lines."""
  widths = [len(h) for h in headers]
  for row in body + [footer]:
    for i, cell in enumerate(row):
      widths[i] = max(widths[i], *(len(line) for line in cell.split('\n')))

  def rule(left: str, mid: str, right: str, fill: str) -> str:
    return left + mid.join(fill * (w + 2) for w in widths) + right

  def lines_of(cells: list[str], right_align: set[int] = frozenset()) -> list[str]:
    split = [c.split('\n') for c in cells]
    height = max(len(s) for s in split)
    out = []
    for j in range(height):
      parts = []
      for i, s in enumerate(split):
        text = s[j] if j < len(s) else ''
        parts.append(text.rjust(widths[i]) if i in right_align else text.ljust(widths[i]))
      out.append('│ ' + ' │ '.join(parts) + ' │')
    return out

  table = [rule('┏', '┳', '┓', '━')]
  table += [line.replace('│', '┃') for line in lines_of(headers)]
  table.append(rule('┡', '╇', '┩', '━'))
  for i, row in enumerate(body):
    if i:
      table.append(rule('├', '┼', '┤', '─'))
    table += lines_of(row)
  table.append(rule('├', '┼', '┤', '─'))
  label_column = next(i for i, c in enumerate(footer) if c == 'Total')
  table += lines_of(footer, right_align={label_column})
  table.append(rule('└', '┴', '┘', '─'))
  width = len(table[0])
  return '\n'.join([title.center(width).rstrip(), *table])


def tabulate(
  module: Module,
  rngs: Any,
  depth: int | None = None,
  show_repeated: bool = False,
  mutable: Filter = DenyList('intermediates'),
  console_kwargs: Mapping[str, Any] | None = None,
  table_kwargs: Mapping[str, Any] = {},  # noqa: B006  (accepted for Linen compatibility)
  column_kwargs: Mapping[str, Any] = {},  # noqa: B006
  compute_flops: bool = False,
  compute_vjp_flops: bool = False,
) -> Callable[..., str]:
  """Returns ``fn(*args, **kwargs) -> str`` that summarises ``module`` on those inputs.

  Args:
    module: the model.
    rngs: a key or dict of keys, as for ``init``.
    depth: show modules at most this deep (None: all). A row at the limit lists its own
      variables and counts those of its hidden descendants too, so the rows add up to
      the total.
    show_repeated: list every call of a module, not only the first (later calls show no
      variables; they are counted in the first).
    mutable: collections to create, as for ``init``.
    console_kwargs: ``{'width': N}`` wraps nothing but is accepted for compatibility.
    table_kwargs: accepted for compatibility with Linen; unused.
    column_kwargs: accepted for compatibility with Linen; unused.
    compute_flops: add a column with each call's FLOPs (XLA cost analysis).
    compute_vjp_flops: add a column with the FLOPs of each call's VJP.

  Returns:
    A function of the model's inputs returning the table as a string.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> print(nn.tabulate(nn.Dense(4), jax.random.key(0))(jnp.ones((16, 9))))
                                  Dense Summary
  ┏━━━━━━┳━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┓
  ┃ path ┃ module ┃ inputs        ┃ outputs       ┃ params               ┃
  ┡━━━━━━╇━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━┩
  │      │ Dense  │ float32[16,9] │ float32[16,4] │ bias: float32[4]     │
  │      │        │               │               │ kernel: float32[9,4] │
  │      │        │               │               │                      │
  │      │        │               │               │ 40 (160 B)           │
  ├──────┼────────┼───────────────┼───────────────┼──────────────────────┤
  │      │        │               │         Total │ 40 (160 B)           │
  └──────┴────────┴───────────────┴───────────────┴──────────────────────┘
  <BLANKLINE>
                          Total Parameters: 40 (160 B)
  """
  del console_kwargs, table_kwargs, column_kwargs

  def summarize(*args: Any, **kwargs: Any) -> str:
    rows, variables = _collect(module, rngs, args, kwargs, mutable)
    if not show_repeated:
      seen: set[tuple[str, ...]] = set()
      unique = []
      for row in rows:
        if row.path not in seen:
          seen.add(row.path)
          unique.append(row)
      rows = unique
    called_paths = {r.path for r in rows}
    if depth is not None:
      rows = [r for r in rows if len(r.path) <= depth]
    collections = list(variables)
    headers = ['path', 'module', 'inputs', 'outputs']
    if compute_flops:
      headers.append('flops')
    if compute_vjp_flops:
      headers.append('vjp_flops')
    headers += collections
    rng_tree = rngs if isinstance(rngs, Mapping) else {'params': rngs}
    body = []
    shown_paths: set[tuple[str, ...]] = set()
    for row in rows:
      args_tree, kwargs_tree = row.inputs
      inputs = args_tree if not kwargs_tree else (*args_tree, dict(kwargs_tree))
      cells = ['/'.join(row.path), row.module_type, _tree_repr(inputs), _tree_repr(row.outputs)]
      if compute_flops:
        cells.append(f'{_call_flops(row, variables, rng_tree, vjp=False):,.0f}')
      if compute_vjp_flops:
        cells.append(f'{_call_flops(row, variables, rng_tree, vjp=True):,.0f}')
      # A row at the depth limit lists its own variables, as every row does, but counts
      # its whole subtree, hidden descendants included, so the rows add up to the total.
      collapsed = depth is not None and len(row.path) == depth
      # A repeated call (show_repeated) shows no variables: they were counted in the
      # module's first row.
      repeated = row.path in shown_paths
      shown_paths.add(row.path)
      for col in collections:
        if repeated:
          cells.append('')
          continue
        node = _subtree(variables, col, row.path)
        children = {
          p[len(row.path)]
          for p in called_paths
          if len(p) > len(row.path) and p[: len(row.path)] == row.path
        }
        if isinstance(node, Mapping):
          # Nested dicts are child modules (possibly hidden by depth or not called).
          children |= {k for k, v in node.items() if isinstance(v, Mapping)}
        own = _own_variables(node, children)
        counted = _collection_leaves(node) if collapsed else _collection_leaves(own)
        if not counted:
          cells.append('')
          continue
        lines = [f'{name}: {_tree_repr(value)}' for name, value in own.items()]
        cells.append('\n'.join(lines) + '\n\n' * bool(lines) + _size_repr(counted))
      body.append(cells)
    footer = ['' for _ in headers]
    footer[headers.index(collections[0]) - 1 if collections else len(headers) - 1] = 'Total'
    totals = {col: _collection_leaves(variables[col]) for col in collections}
    for col in collections:
      footer[headers.index(col)] = _size_repr(totals[col])
    title = f'{type(module).__name__} Summary'
    table = _render(title, headers, body, footer)
    everything = [leaf for leaves in totals.values() for leaf in leaves]
    summary = f'Total Parameters: {_size_repr(everything)}'
    width = len(table.split('\n')[1])
    return f'{table}\n\n{summary.center(width).rstrip()}'

  return summarize


def module_tabulate(
  self: Module,
  rngs: Any,
  *args: Any,
  depth: int | None = None,
  show_repeated: bool = False,
  mutable: Filter = DenyList('intermediates'),
  console_kwargs: Mapping[str, Any] | None = None,
  table_kwargs: Mapping[str, Any] = {},
  column_kwargs: Mapping[str, Any] = {},  # noqa: B006
  compute_flops: bool = False,
  compute_vjp_flops: bool = False,
  **kwargs: Any,
) -> str:
  """``Module.tabulate``: the summary table of this module on ``args`` (see ``tabulate``)."""
  return tabulate(
    self,
    rngs,
    depth=depth,
    show_repeated=show_repeated,
    mutable=mutable,
    console_kwargs=console_kwargs,
    table_kwargs=table_kwargs,
    column_kwargs=column_kwargs,
    compute_flops=compute_flops,
    compute_vjp_flops=compute_vjp_flops,
  )(*args, **kwargs)
