"""nn.tabulate / Module.tabulate: rows, variable columns, totals, depth, FLOPs."""

import jax
import jax.numpy as jnp
import numpy as np

import flaxlike as nn

KEY = jax.random.key(0)
X = jnp.ones((4, 8))


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
  table = Net().tabulate(KEY, X)
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
  table = nn.tabulate(Net(), KEY, depth=1)(X)
  rows = _body_rows(table)
  assert [r[0] for r in rows] == ['', 'Block_0', 'Dense_0', '']
  # Block_0's Dense is hidden: Block_0 owns no params but counts its Dense's 72; its own
  # counter is listed.
  assert rows[1][4:] == ['calls: int32[]\n\n1 (4 B)', f'{8 * 8 + 8} ({(8 * 8 + 8) * 4} B)']
  # A module at the depth limit without children lists its variables as usual.
  assert rows[2][5] == 'bias: float32[2]\nkernel: float32[8,2]\n\n18 (72 B)'
  assert rows[3][5] == '90 (360 B)'


def test_show_repeated_lists_every_call_and_counts_variables_once():
  rows = _body_rows(nn.tabulate(Net(), KEY, depth=1, show_repeated=True)(X))
  assert [r[0] for r in rows] == ['', 'Block_0', 'Block_0', 'Dense_0', '']
  assert rows[1][5] == '72 (288 B)'
  assert rows[2][4:] == ['', '']
  counted = sum(int(r[5].split('\n')[-1].split(' ')[0]) for r in rows[:-1] if r[5])
  assert counted == int(rows[-1][5].split(' ')[0]) == 90


def test_flops_of_dense_match_closed_form():
  table = nn.Dense(3).tabulate(KEY, jnp.ones((5, 7)), compute_flops=True, compute_vjp_flops=True)
  header = _rows(table)  # the header row uses ┃, not │
  row = [r for r in header if r[1] == 'Dense'][0]
  flops, vjp_flops = (float(v.replace(',', '')) for v in row[4:6])
  assert flops == 2 * 5 * 7 * 3 + 5 * 3
  assert vjp_flops > flops
