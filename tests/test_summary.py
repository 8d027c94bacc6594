"""nn.tabulate / Module.tabulate: rows, variable columns, totals, depth, FLOPs, rendering.

Every table is drawn twice, with rich (installed by the test extra) and with the plain-text
renderer used when rich is missing; the two must be identical character for character.
"""

import enum

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flaxlike as nn
from flaxlike import struct
from flaxlike.linen import summary

KEY = jax.random.key(0)
X = jnp.ones((4, 8))
# No colours, no wrapping: what the plain renderer draws.
PLAIN = {'force_terminal': False, 'no_color': True, 'width': 10_000}


@pytest.fixture(autouse=True)
def _renderers_agree(monkeypatch):
  """Checks every table this module draws against the plain renderer's drawing."""
  original = summary.tabulate

  def checked(*args, **kwargs):
    fn = original(*args, **kwargs)

    def run(*a, **k):
      text = fn(*a, **k)
      rich_only = kwargs.get('table_kwargs') or kwargs.get('column_kwargs')
      if summary._rich is not None and kwargs.get('console_kwargs') == PLAIN and not rich_only:
        with monkeypatch.context() as m:
          m.setattr(summary, '_rich', None)
          assert fn(*a, **k) == text
      return text

    return run

  monkeypatch.setattr(summary, 'tabulate', checked)
  monkeypatch.setattr(nn, 'tabulate', checked)


class Block(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Dense(8)(x)
    count = self.variable('counters', 'calls', jnp.zeros, (), jnp.int32)
    del count
    return nn.relu(x)


class Net(nn.Module):
  @nn.compact
  def __call__(self, x):
    block = Block()
    return nn.Dense(2)(block(block(x)))


def _rows(table: str) -> list[list[str]]:
  rows = []
  for line in table.split('\n'):
    if line.startswith('│'):
      rows.append([cell.strip() for cell in line.strip('│').split('│')])
  return rows


def test_rows_follow_call_order_and_list_own_variables():
  table = Net().tabulate(KEY, X, console_kwargs=PLAIN)
  first_lines = [r for r in _rows(table) if r[1]]
  assert [(r[0], r[1]) for r in first_lines] == [
    ('', 'Net'),
    ('Block_0', 'Block'),
    ('Block_0/Dense_0', 'Dense'),
    ('Dense_0', 'Dense'),
  ]
  assert 'kernel: float32[8,8]' in table and 'calls: int32[]' in table
  params = Net().init(KEY, X)['params']
  count = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
  size = count * 4
  assert f'{count:,} ({size:,} B)' in table
  # counters (one int32) are included in the grand total.
  assert table.rstrip().endswith(f'Total Parameters: {count + 1:,} ({size + 4:,} B)')


def _body_rows(table: str) -> list[list[str]]:
  """Each body or footer row of the table as its cells, multi-line cells joined by '\\n'."""
  rows, current = [], None
  for line in table.split('\n'):
    if line.startswith(('┡', '├', '└')):
      if current is not None:
        rows.append(['\n'.join(part).strip() for part in current])
      current = None if line.startswith('└') else []
    elif line.startswith('│') and current is not None:
      cells = [cell.strip() for cell in line.strip('│').split('│')]
      if not current:
        current.extend([] for _ in cells)
      for part, cell in zip(current, cells):
        part.append(cell)
  return rows


def test_depth_counts_hidden_subtrees_and_lists_own_variables():
  table = nn.tabulate(Net(), KEY, depth=1, console_kwargs=PLAIN)(X)
  rows = _body_rows(table)
  assert [r[0] for r in rows] == ['', 'Block_0', 'Dense_0', '']
  # Block_0's Dense is hidden: Block_0 owns no params but counts its Dense's 72; its own
  # counter is listed.
  assert rows[1][4:] == ['calls: int32[]\n\n1 (4 B)', f'{8 * 8 + 8} ({(8 * 8 + 8) * 4} B)']
  # A module at the depth limit without children lists its variables as usual.
  assert rows[2][5] == 'bias: float32[2]\nkernel: float32[8,2]\n\n18 (72 B)'
  assert rows[3][5] == '90 (360 B)'


def test_show_repeated_lists_every_call_and_counts_variables_once():
  rows = _body_rows(nn.tabulate(Net(), KEY, depth=1, show_repeated=True, console_kwargs=PLAIN)(X))
  assert [r[0] for r in rows] == ['', 'Block_0', 'Block_0', 'Dense_0', '']
  assert rows[1][5] == '72 (288 B)'
  assert rows[2][4:] == ['', '']
  counted = sum(int(r[5].split('\n')[-1].split(' ')[0]) for r in rows[:-1] if r[5])
  assert counted == int(rows[-1][5].split(' ')[0]) == 90


def test_flops_of_dense_match_closed_form():
  table = nn.Dense(3).tabulate(
    KEY, jnp.ones((5, 7)), compute_flops=True, compute_vjp_flops=True, console_kwargs=PLAIN
  )
  header = _rows(table)  # the header row uses ┃, not │
  row = [r for r in header if r[1] == 'Dense'][0]
  flops, vjp_flops = (float(v.replace(',', '')) for v in row[4:6])
  assert flops == 2 * 5 * 7 * 3 + 5 * 3
  assert vjp_flops > flops


class Twice(nn.Module):
  def setup(self):
    self.dense = nn.Dense(2)

  def __call__(self, x):
    return self.dense(x)

  def encode(self, x, scale=1.0):
    return self.dense(x) * scale


def test_title_method_column_and_layout():
  table = Twice().tabulate(KEY, X, method='encode', console_kwargs=PLAIN)
  lines = table.split('\n')
  assert lines[0] == '' and lines[1].strip() == 'Twice Summary'
  assert [h.strip() for h in lines[3].split('┃')[1:-1]] == [
    'path',
    'module',
    'inputs',
    'outputs',
    'params',
  ]
  assert 'Twice (encode)' in lines[5]
  assert lines[-3].strip() == 'Total Parameters: 18 (72 B)' and lines[-2:] == ['', '']


def test_values_keys_and_metadata_render_as_in_linen():
  class Key(enum.StrEnum):
    x = 'x'

  @struct.dataclass
  class Meta:
    names: tuple = struct.field(pytree_node=False)

  class Inner(nn.Module):
    def __call__(self, x, flag=True):
      return x + 1

  class Outer(nn.Module):
    @nn.compact
    def __call__(self, inputs):
      self.sow('notes', 'meta', Meta(('embed', 'mlp')))
      nn.Dense(3, kernel_init=nn.with_partitioning(nn.initializers.ones, (None, 'model')))(
        inputs[Key.x]
      )
      return Inner()(x=np.pi)

  rows = _body_rows(Outer().tabulate(KEY, {Key.x: jnp.ones((1, 2))}, console_kwargs=PLAIN))
  assert rows[0][2] == 'x: float32[1,2]'  # enum keys by value
  assert rows[0][3] == '4.141592653589793'
  assert rows[0][4] == 'meta:\n- names:\n- embed\n- mlp'  # dataclasses as fields
  assert rows[1][5] == 'bias: float32[3]\nkernel: float32[2,3] P(None, model)\n\n9 (36 B)'
  assert (rows[2][0], rows[2][2], rows[2][3]) == (
    'Inner_0',
    'x: 3.141592653589793',
    '4.141592653589793',
  )


def test_flops_add_up_over_reused_blocks():
  class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.relu(nn.Dense(4)(x))

  class Stack(nn.Module):
    @nn.compact
    def __call__(self, x):
      block = Block()
      return block(block(block(x)))

  x = jnp.ones((2, 4))
  kw = dict(compute_flops=True, compute_vjp_flops=True, console_kwargs=PLAIN)
  rows = _body_rows(Stack().tabulate(KEY, x, show_repeated=True, depth=1, **kw))
  assert [r[0] for r in rows] == ['', 'Block_0', 'Block_0', 'Block_0', '']
  block_rows = _body_rows(Block().tabulate(KEY, x, **kw))
  per_call = [int(v) for v in block_rows[0][4:6]]
  for row in rows[1:4]:
    assert [int(v) for v in row[4:6]] == per_call
  assert [int(v) for v in rows[0][4:6]] == [3 * f for f in per_call]
  # Only the first call lists and counts the block's variables.
  assert rows[1][6].endswith('20 (80 B)') and rows[2][6] == rows[3][6] == ''


def test_wrapped_layers_and_lifted_transforms_get_their_own_rows():
  class Cell(nn.Module):
    @nn.compact
    def __call__(self, carry, _):
      return nn.Dense(3)(carry), None

  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.WeightNorm(nn.Dense(3))(x)
      stack = nn.scan(Cell, variable_axes={'params': 0}, split_rngs={'params': True}, length=2)
      return stack(name='Stacked')(x, None)[0]

  rows = _body_rows(Model().tabulate(KEY, jnp.ones((2, 3)), console_kwargs=PLAIN))
  assert [(r[0], r[1]) for r in rows[:-1]] == [
    ('', 'Model'),
    ('WeightNorm_0', 'WeightNorm'),
    ('Dense_0', 'Dense'),
    ('Stacked', 'Cell'),
    ('Stacked/Dense_0', 'Dense'),
  ]
  assert rows[1][4].startswith('Dense_0/kernel/scale: float32[3]')
  assert 'kernel: float32[2,3,3]' in rows[4][4]


@pytest.mark.skipif(summary._rich is None, reason='needs rich')
def test_rich_console_table_and_column_kwargs_are_honoured():
  fn = nn.tabulate(nn.Dense(2), KEY)
  assert '\x1b[2mfloat32\x1b[0m[4,8]' in fn(X)  # Linen's default: a styled terminal table
  narrow = nn.tabulate(nn.Dense(2), KEY, console_kwargs={**PLAIN, 'width': 40})(X)
  wide = nn.tabulate(nn.Dense(2), KEY, console_kwargs=PLAIN)(X)
  assert max(map(len, narrow.split('\n'))) < max(map(len, wide.split('\n')))
  boxed = nn.tabulate(
    nn.Dense(2),
    KEY,
    console_kwargs=PLAIN,
    table_kwargs={'caption_justify': 'left'},
    column_kwargs={'justify': 'right'},
  )(X)
  lines = boxed.split('\n')
  assert lines[-3].startswith('Total Parameters')
  assert any(line.startswith('│      │  Dense │') for line in lines)


def test_without_rich_the_table_is_plain_text(monkeypatch):
  monkeypatch.setattr(summary, '_rich', None)
  text = nn.Dense(2).tabulate(KEY, X, console_kwargs={'width': 20})
  assert '\x1b' not in text and 'kernel: float32[8,2]' in text
