"""Model summaries: ``nn.tabulate`` and ``Module.tabulate``, Linen's table.

One row per module method call, in the order the calls start: the module's path, class
(and method, when not ``__call__``), inputs and outputs (arrays as ``dtype[shape]``),
optionally the FLOPs of the call and of its VJP, and one column per variable collection
with the module's own variables and their count and size. A footer sums each collection
and a caption gives the grand total. Only shapes are computed (``jax.eval_shape``), so a
summary of a large model costs a trace, not a forward pass.

The table is drawn with ``rich`` when it is installed, exactly as Linen draws it
(``console_kwargs``, ``table_kwargs`` and ``column_kwargs`` go to ``rich``); without it, the
same layout is drawn in plain text (no colours, no wrapping), so summaries never need an
extra dependency.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flaxlike.core import meta
from flaxlike.core.scope import DenyList, Filter
from flaxlike.linen._module.context import intercept_methods

# The Module system imports this file (Module.tabulate), so this file does not import it
# back, not even for annotations: any flaxlike Module is accepted where this name appears.
Module = Any

try:  # optional: Linen's look when available, plain text otherwise
  import rich.console
  import rich.table
  import rich.text

  _rich: Any = rich
except ImportError:  # pragma: no cover - depends on the environment
  _rich = None

_DEFAULT_MUTABLE = DenyList('intermediates')
_NO_METHOD_SHOWN = frozenset({'__call__', '<lambda>'})


#################################################
# How values appear in the table
#################################################


@dataclasses.dataclass(frozen=True)
class _ArrayRepr:
  """An array (or anything with a shape and dtype), shown as ``dtype[shape]``."""

  shape: tuple[int, ...]
  dtype: Any
  names: Any = None  # the axis names of a Partitioned box

  def render(self) -> str:
    text = f'[dim]{self.dtype}[/dim][{",".join(str(d) for d in self.shape)}]'
    return text if self.names is None else f'{text} [dim]P[/dim]{self.names}'

  def abstract(self) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(self.shape, self.dtype)


@dataclasses.dataclass(frozen=True)
class _ObjectRepr:
  """A Python value (number, flag, None, object), shown by its ``repr``."""

  obj: Any

  def render(self) -> str:
    return repr(self.obj)


def _value_repr(x: Any) -> Any:
  if isinstance(x, (bool, int, float, type(None))):
    return _ObjectRepr(x)
  if isinstance(x, meta.Partitioned):
    return _ArrayRepr(tuple(np.shape(x.value)), jnp.result_type(x.value), x.names)
  if hasattr(x, 'shape') and hasattr(x, 'dtype'):  # arrays, tracers, ShapeDtypeStructs
    return _ArrayRepr(tuple(x.shape), jnp.result_type(x))
  return _ObjectRepr(x)


def _represent(tree: Any) -> Any:
  """``tree`` with every leaf (and every Partitioned box) replaced by its representation."""
  return jax.tree_util.tree_map(
    _value_repr, tree, is_leaf=lambda x: x is None or isinstance(x, meta.Partitioned)
  )


def _normalize(obj: Any) -> Any:
  """Plain dicts, tuples and strings: dataclasses become dicts, enums their values."""
  if isinstance(obj, (_ArrayRepr, _ObjectRepr)):
    return obj.render()
  if isinstance(obj, (tuple, list)):
    return tuple(_normalize(x) for x in obj)
  if isinstance(obj, Mapping):
    return {_normalize(k): _normalize(v) for k, v in obj.items()}
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return {f.name: _normalize(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
  if isinstance(obj, enum.Enum):
    return obj.value
  return obj  # dict keys (str, int, ...) stay as they are


def _yaml_scalar(x: Any) -> str:
  if x is None:
    return 'null'
  if isinstance(x, bool):
    return 'true' if x else 'false'
  return str(x)


def _yaml_block(node: Any) -> list[str]:
  """Block-style YAML lines of a non-empty dict or tuple (sequences in mappings unindented)."""
  lines: list[str] = []
  if isinstance(node, Mapping):
    for key, value in node.items():
      key = _yaml_scalar(key)
      if isinstance(value, (Mapping, tuple)) and value:
        nested = _yaml_block(value)
        lines.append(f'{key}:')
        lines += ['  ' + line for line in nested] if isinstance(value, Mapping) else nested
      else:
        lines.append(f'{key}: {_yaml_leaf(value)}')
    return lines
  for item in node:
    if isinstance(item, (Mapping, tuple)) and item:
      nested = _yaml_block(item)
      lines.append('- ' + nested[0])
      lines += ['  ' + line for line in nested[1:]]
    else:
      lines.append(f'- {_yaml_leaf(item)}')
  return lines


def _yaml_leaf(value: Any) -> str:
  if isinstance(value, Mapping):
    return '{}'
  if isinstance(value, tuple):
    return '[]'
  return _yaml_scalar(value)


def _cell(tree: Any) -> str:
  """A cell's text: the normalised tree in block YAML, as Linen lays it out (no quotes)."""
  node = _normalize(tree)
  if node is None or (isinstance(node, (Mapping, tuple)) and not node):
    return ''
  lines = _yaml_block(node) if isinstance(node, (Mapping, tuple)) else [_yaml_scalar(node)]
  return '\n'.join(lines).replace("'", '').strip()


def _bytes_repr(num_bytes: int) -> str:
  for limit, unit in ((1e9, 'GB'), (1e6, 'MB'), (1e3, 'KB')):
    if num_bytes > limit:
      return f'{num_bytes / limit:,.1f} {unit}'
  return f'{num_bytes:,} B'


def _size_and_bytes(tree: Any) -> tuple[int, int]:
  leaves = [x for x in jax.tree_util.tree_leaves(tree) if hasattr(x, 'size')]
  return (
    sum(int(x.size) for x in leaves),
    sum(int(x.size) * np.dtype(x.dtype).itemsize for x in leaves),
  )


def _size_repr(size: int, num_bytes: int) -> str:
  return f'{size:,} [dim]({_bytes_repr(num_bytes)})[/dim]' if size else ''


#################################################
# Recording the calls
#################################################


@dataclasses.dataclass
class _Call:
  index: int
  path: tuple[str, ...]
  module: Module
  method: str
  args: tuple
  kwargs: dict
  outputs: Any


@dataclasses.dataclass
class _Row:
  path: tuple[str, ...]
  module_type: str
  method: str
  inputs: Any
  outputs: Any
  module_variables: dict[str, Any]
  counted_variables: dict[str, Any]
  flops: int = -1
  vjp_flops: int = -1


def _record_calls(module: Module, rngs: Any, args: tuple, kwargs: dict) -> tuple[list[_Call], Any]:
  """Runs ``init`` abstractly and records every module method call (``setup`` aside)."""
  calls: list[_Call] = []
  started = [0]

  def record(next_fun, call_args, call_kwargs, ctx):
    mod = ctx.module
    if mod.scope is None or ctx.method_name == 'setup':
      return next_fun(*call_args, **call_kwargs)
    index = started[0]
    started[0] += 1
    out = next_fun(*call_args, **call_kwargs)
    calls.append(
      _Call(
        index,
        tuple(mod.scope.path),
        mod.clone(parent=None, _deep_clone=True),
        ctx.method_name,
        _represent(tuple(call_args)),
        _represent(dict(call_kwargs)),
        _represent(out),
      )
    )
    return out

  with intercept_methods(record):
    variables = jax.eval_shape(lambda r: module.init(r, *args, **kwargs), rngs)
  calls.sort(key=lambda c: c.index)
  return calls, variables


def _variables_at(path: tuple[str, ...], variables: Mapping[str, Any]) -> dict[str, Any]:
  found = {}
  for col, tree in variables.items():
    for name in path:
      if not isinstance(tree, Mapping) or name not in tree:
        tree = None
        break
      tree = tree[name]
    if tree is not None:
      found[col] = dict(tree) if isinstance(tree, Mapping) else tree
  return found


def _own_variables(
  path: tuple[str, ...], variables: Mapping[str, Any], called: set[tuple[str, ...]]
) -> dict[str, Any]:
  """The variables at ``path`` without those of submodules that were called."""
  own = _variables_at(path, variables)
  for tree in own.values():
    if isinstance(tree, dict):
      for key in [k for k in tree if path + (k,) in called]:
        del tree[key]
  return own


def _inputs(args: tuple, kwargs: dict) -> Any:
  if args and kwargs:
    return (*args, kwargs)
  if args:
    return args[0] if len(args) == 1 else args
  return kwargs if kwargs else ()


def _flops_of(fn: Callable[..., Any], *args: Any) -> int:
  cost = jax.jit(fn).lower(*args).cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return int(cost['flops']) if cost and 'flops' in cost else 0


def _call_flops(call: _Call, rngs: Any, mutable: Filter, vjp: bool) -> int:
  """FLOPs of the call run on its own, re-initialised module (and of its VJP when asked)."""
  leaves, treedef = jax.tree_util.tree_flatten(
    (call.args, call.kwargs), is_leaf=lambda x: isinstance(x, (_ArrayRepr, _ObjectRepr))
  )
  dynamic_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, _ArrayRepr)]
  dynamic = [leaves[i].abstract() for i in dynamic_at]
  static = [leaf.obj if isinstance(leaf, _ObjectRepr) else None for leaf in leaves]

  def inputs(dynamic_values):
    filled = list(static)
    for i, value in zip(dynamic_at, dynamic_values):
      filled[i] = value
    return jax.tree_util.tree_unflatten(treedef, filled)

  def init(rngs, dynamic_values):
    args, kwargs = inputs(dynamic_values)
    return call.module.init(rngs, *args, method=call.method, mutable=mutable, **kwargs)

  variables = jax.eval_shape(init, rngs, dynamic)

  def apply(variables, rngs, dynamic_values):
    args, kwargs = inputs(dynamic_values)
    return call.module.apply(
      variables, *args, rngs=rngs, method=call.method, mutable=mutable, **kwargs
    )

  if not vjp:
    return _flops_of(apply, variables, rngs, dynamic)

  def apply_vjp(variables, rngs, dynamic_values):
    out, pullback = jax.vjp(apply, variables, rngs, dynamic_values)
    return pullback(out)

  return _flops_of(apply_vjp, variables, rngs, dynamic)


def _table_rows(
  module: Module,
  rngs: Any,
  args: tuple,
  kwargs: dict,
  depth: int | None,
  show_repeated: bool,
  compute_flops: bool,
  compute_vjp_flops: bool,
) -> tuple[list[_Row], tuple[str, ...]]:
  calls, variables = _record_calls(module, rngs, args, kwargs)
  mutable = kwargs.get('mutable', _DEFAULT_MUTABLE)
  rng_dict = rngs if isinstance(rngs, Mapping) else {'params': rngs}
  called = {c.path for c in calls}
  seen: set[tuple[str, ...]] = set()
  rows = []
  for call in calls:
    if call.path in seen or not hasattr(call.module, call.method):
      if not show_repeated:
        continue
      own, counted = {}, {}
    elif depth is not None and len(call.path) > depth:
      continue
    else:
      own = _own_variables(call.path, variables, called)
      # A row at the depth limit counts its whole subtree, so the rows add up.
      at_limit = depth is not None and len(call.path) == depth
      counted = _variables_at(call.path, variables) if at_limit else own
    seen.add(call.path)
    row = _Row(
      call.path,
      type(call.module).__name__,
      call.method,
      _inputs(call.args, call.kwargs),
      call.outputs,
      own,
      counted,
    )
    if compute_flops:
      row.flops = _call_flops(call, rng_dict, mutable, vjp=False)
    if compute_vjp_flops:
      row.vjp_flops = _call_flops(call, rng_dict, mutable, vjp=True)
    rows.append(row)
  return rows, tuple(variables)


#################################################
# Drawing the table
#################################################

_MARKUP = re.compile(r'\[/?(?:dim|bold)\]')


@dataclasses.dataclass
class _Layout:
  """The table's content as markup strings, before it is drawn."""

  title: str
  headers: list[str]
  body: list[list[str]]
  footer: list[str]
  caption: str


def _layout(module: Module, rows: list[_Row], collections: tuple[str, ...], fixed: list[str]):
  headers = fixed + list(collections)
  body = []
  totals = {col: (0, 0) for col in collections}
  for row in rows:
    method = '' if row.method in _NO_METHOD_SHOWN else f' [dim]({row.method})[/dim]'
    cells = ['/'.join(row.path), row.module_type + method, _cell(row.inputs), _cell(row.outputs)]
    cells += [str(row.flops)] if 'flops' in fixed else []
    cells += [str(row.vjp_flops)] if 'vjp_flops' in fixed else []
    for col in collections:
      size = _size_and_bytes(row.counted_variables[col]) if col in row.counted_variables else (0, 0)
      totals[col] = (totals[col][0] + size[0], totals[col][1] + size[1])
      text = _cell(_represent(row.module_variables[col])) if col in row.module_variables else ''
      cells.append(text + '\n\n' * bool(text) + f'[bold]{_size_repr(*size)}[/bold]')
    body.append(cells)
  footer = [''] * len(headers)
  footer[len(fixed) - 1] = 'Total'
  for i, col in enumerate(collections):
    footer[len(fixed) + i] = _size_repr(*totals[col])
  grand = (sum(s for s, _ in totals.values()), sum(b for _, b in totals.values()))
  caption = f'\nTotal Parameters: {_size_repr(*grand)}'
  return _Layout(f'{type(module).__name__} Summary', headers, body, footer, caption)


def _render_rich(
  layout: _Layout,
  console_kwargs: Mapping[str, Any] | None,
  table_kwargs: Mapping[str, Any],
  column_kwargs: Mapping[str, Any],
) -> str:
  table = _rich.table.Table(
    show_header=True, show_lines=True, show_footer=True, title=layout.title, **table_kwargs
  )
  for header in layout.headers:
    table.add_column(header, **column_kwargs)
  for cells in layout.body:
    table.add_row(*cells)
  label = layout.footer.index('Total')
  for i, text in enumerate(layout.footer):
    if i == label:
      table.columns[i].footer = _rich.text.Text.from_markup(text, justify='right')
    elif text:
      table.columns[i].footer = text
  table.caption_style = 'bold'
  table.caption = layout.caption
  out = io.StringIO()
  kwargs = {'force_terminal': True, 'force_jupyter': False, **(console_kwargs or {})}
  _rich.console.Console(file=out, **kwargs).print(table)
  return out.getvalue()


def _render_plain(layout: _Layout) -> str:
  """The rich layout (heavy head box, a rule between rows, centred title and caption) in
  plain text: no styles, no wrapping."""

  def split(text: str) -> list[str]:
    return _MARKUP.sub('', text).split('\n')

  header = [split(h) for h in layout.headers]
  body = [[split(c) for c in row] for row in layout.body]
  footer = [split(f) for f in layout.footer]
  widths = [
    max(len(line) for cells in [header, *body, footer] for line in cells[i])
    for i in range(len(layout.headers))
  ]
  label = layout.footer.index('Total')

  def rule(left: str, mid: str, right: str, fill: str) -> str:
    return left + mid.join(fill * (w + 2) for w in widths) + right

  def lines_of(cells: list[list[str]], bar: str, right: int = -1) -> list[str]:
    out = []
    for j in range(max(len(c) for c in cells)):
      parts = []
      for i, lines in enumerate(cells):
        text = lines[j] if j < len(lines) else ''
        parts.append(text.rjust(widths[i]) if i == right else text.ljust(widths[i]))
      out.append(bar + ' ' + f' {bar} '.join(parts) + ' ' + bar)
    return out

  table = [rule('┏', '┳', '┓', '━'), *lines_of(header, '┃'), rule('┡', '╇', '┩', '━')]
  for cells in body:
    table += lines_of(cells, '│') + [rule('├', '┼', '┤', '─')]
  table += lines_of(footer, '│', right=label) + [rule('└', '┴', '┘', '─')]
  width = len(table[0])

  def centred(text: str) -> str:  # rich puts the odd space on the right
    left = max(width - len(text), 0) // 2
    return ' ' * left + text + ' ' * max(width - len(text) - left, 0)

  title = [centred(layout.title)] if layout.title else []
  caption = [centred(line) for line in split(layout.caption)]
  return '\n'.join(title + table + caption) + '\n'


def tabulate(
  module: Module,
  rngs: Any,
  depth: int | None = None,
  show_repeated: bool = False,
  mutable: Filter = _DEFAULT_MUTABLE,
  console_kwargs: Mapping[str, Any] | None = None,
  table_kwargs: Mapping[str, Any] = {},  # noqa: B006  (read only)
  column_kwargs: Mapping[str, Any] = {},  # noqa: B006  (read only)
  compute_flops: bool = False,
  compute_vjp_flops: bool = False,
  **kwargs: Any,
) -> Callable[..., str]:
  """Returns ``fn(*args, **kwargs) -> str``, the summary table of ``module`` on those inputs.

  Args:
    module: the model.
    rngs: a key or dict of keys, as for ``init``.
    depth: show modules at most this deep (None: all). A row at the limit also counts
      the variables of its hidden descendants, so the rows add up to the totals.
    show_repeated: list every call of a module, not only the first (later calls show no
      variables; they are counted in the first).
    mutable: collections ``init`` creates (as for ``init``); also the ``mutable`` of the
      calls whose FLOPs are measured.
    console_kwargs: arguments of ``rich.console.Console`` (default
      ``{'force_terminal': True, 'force_jupyter': False}``; e.g. ``{'width': 120}``).
      Without ``rich`` the table is plain text and these are not used.
    table_kwargs: arguments of ``rich.table.Table`` (rich only).
    column_kwargs: arguments of ``rich.table.Table.add_column`` (rich only).
    compute_flops: add a ``flops`` column: each call's FLOPs (XLA's cost analysis of the
      call run on its own).
    compute_vjp_flops: add a ``vjp_flops`` column: the FLOPs of each call's VJP.
    **kwargs: further arguments of ``init``, e.g. ``method``.

  Returns:
    A function of the model's inputs returning the table as a string.

  Example:

  >>> import jax, jax.numpy as jnp
  >>> import flaxlike as nn
  >>> plain = {'force_terminal': False, 'no_color': True, 'width': 200}
  >>> print(nn.tabulate(nn.Dense(4), jax.random.key(0), console_kwargs=plain)(jnp.ones((16, 9))))
  <BLANKLINE>
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
  <BLANKLINE>
  <BLANKLINE>
  """
  if mutable != _DEFAULT_MUTABLE:
    kwargs['mutable'] = mutable

  def summarize(*args: Any, **call_kwargs: Any) -> str:
    rows, collections = _table_rows(
      module,
      rngs,
      args,
      {**call_kwargs, **kwargs},
      depth,
      show_repeated,
      compute_flops,
      compute_vjp_flops,
    )
    fixed = ['path', 'module', 'inputs', 'outputs']
    fixed += ['flops'] * compute_flops + ['vjp_flops'] * compute_vjp_flops
    layout = _layout(module, rows, collections, fixed)
    if _rich is None:
      text = _render_plain(layout)
    else:
      text = _render_rich(layout, console_kwargs, table_kwargs, column_kwargs)
    return '\n' + text + '\n'

  return summarize


def module_tabulate(
  self: Module,
  rngs: Any,
  *args: Any,
  depth: int | None = None,
  show_repeated: bool = False,
  mutable: Filter = _DEFAULT_MUTABLE,
  console_kwargs: Mapping[str, Any] | None = None,
  table_kwargs: Mapping[str, Any] = {},  # noqa: B006  (read only)
  column_kwargs: Mapping[str, Any] = {},  # noqa: B006  (read only)
  compute_flops: bool = False,
  compute_vjp_flops: bool = False,
  **kwargs: Any,
) -> str:
  """``Module.tabulate``: the summary table of this module on ``args`` (see ``tabulate``).

  Keyword arguments other than the table's own go to the call (and ``method`` to
  ``init``), as in Linen.
  """
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
