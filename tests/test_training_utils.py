"""``flaxlike.training``'s early_stopping, lr_schedule and prefetch_iterator, against plain
Python/NumPy references and the equivalent optax schedules."""

import logging
import math
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaxlike.training import early_stopping, lr_schedule, prefetch_iterator
from flaxlike.training.early_stopping import EarlyStopping

# early_stopping


def _reference_stop_epoch(losses, min_delta, patience):
  """The rule written out: stop at the (patience+1)-th update in a row with no improvement."""
  best, misses = math.inf, 0
  for epoch, loss in enumerate(losses):
    if math.isinf(best) or best - loss > min_delta:
      best, misses = loss, 0
    else:
      misses += 1
      if misses > patience:
        return epoch, best
  return None, best


@settings(max_examples=50, deadline=None)
@given(
  st.lists(st.integers(0, 6), min_size=1, max_size=15),
  st.sampled_from([0.0, 0.5, 1.5]),
  st.integers(0, 3),
)
def test_early_stopping_follows_the_rule(losses, min_delta, patience):
  state = EarlyStopping(min_delta=min_delta, patience=patience)
  stopped_at = None
  for epoch, loss in enumerate(losses):
    state = state.update(float(loss))
    if state.should_stop and stopped_at is None:
      stopped_at = epoch
  expected_epoch, _ = _reference_stop_epoch([float(x) for x in losses], min_delta, patience)
  assert stopped_at == expected_epoch


def test_early_stopping_state_fields_reset_and_pytree():
  state = EarlyStopping(min_delta=0.1, patience=1)
  state = state.update(1.0)
  assert state.has_improved and state.best_metric == 1.0 and state.patience_count == 0
  state = state.update(0.95)  # not better by more than min_delta
  assert not state.has_improved and state.best_metric == 1.0 and state.patience_count == 1
  state = state.update(0.99)
  assert state.should_stop and state.patience_count == 2
  state = state.update(0.1)  # an improvement does not clear should_stop; reset does
  assert state.should_stop and state.has_improved and state.best_metric == 0.1
  fresh = state.reset()
  assert (fresh.best_metric, fresh.patience_count, fresh.should_stop, fresh.has_improved) == (
    math.inf,
    0,
    False,
    False,
  )
  assert (fresh.min_delta, fresh.patience) == (0.1, 1)
  # A pytree (struct.PyTreeNode), so it can live in a TrainState and go through jit.
  leaves = jax.tree.leaves(EarlyStopping(min_delta=0.5))
  assert len(leaves) == 6
  doubled = jax.jit(lambda s: s.replace(best_metric=s.best_metric * 2))(state)
  assert float(doubled.best_metric) == pytest.approx(0.2)


# lr_schedule


STEPS = np.arange(0, 120)


@pytest.fixture
def schedule_warnings(caplog):
  caplog.set_level(logging.WARNING, logger=lr_schedule.__name__)
  return caplog


def test_constant_schedule_with_warmup(schedule_warnings):
  f = lr_schedule.create_constant_learning_rate_schedule(0.3, steps_per_epoch=10, warmup_length=2)
  expected = 0.3 * np.minimum(1.0, STEPS / 2.0 / 10)
  np.testing.assert_allclose([float(f(s)) for s in STEPS], expected, rtol=1e-6)
  assert float(lr_schedule.create_constant_learning_rate_schedule(0.3, 10)(7)) == pytest.approx(0.3)
  assert 'effectively deprecated in favor of Optax schedules' in schedule_warnings.text


def test_stepped_schedule_equals_optax_piecewise_constant(schedule_warnings):
  f = lr_schedule.create_stepped_learning_rate_schedule(
    0.5, steps_per_epoch=10, lr_sched_steps=[[3, 0.1], [6.05, 0.01], [9, 0.001]]
  )
  # optax switches at step >= boundary; Flax's rule switches after step round(epoch * 10),
  # rounding half to even as NumPy does (60.5 -> 60).
  reference = optax.piecewise_constant_schedule(0.5, {31: 0.1, 61: 0.1, 91: 0.1})
  np.testing.assert_allclose(
    [float(f(s)) for s in STEPS], [float(reference(s)) for s in STEPS], rtol=1e-6
  )
  warm = lr_schedule.create_stepped_learning_rate_schedule(0.5, 10, [[3, 0.1]], warmup_length=1)
  np.testing.assert_allclose(float(warm(5)), 0.25, rtol=1e-6)
  assert schedule_warnings.text.count('effectively deprecated') == 2


def test_cosine_schedule_equals_optax_cosine_decay(schedule_warnings):
  f = lr_schedule.create_cosine_learning_rate_schedule(0.2, steps_per_epoch=10, halfcos_epochs=12)
  reference = optax.cosine_decay_schedule(0.2, decay_steps=120)
  np.testing.assert_allclose(
    [float(f(s)) for s in STEPS], [float(reference(s)) for s in STEPS], rtol=1e-5, atol=1e-7
  )
  warm = lr_schedule.create_cosine_learning_rate_schedule(0.2, 10, 12, warmup_length=3)
  expected = 0.2 * (np.cos(STEPS * np.pi / 120) * 0.5 + 0.5) * np.minimum(1.0, STEPS / 30)
  np.testing.assert_allclose([float(warm(s)) for s in STEPS], expected, rtol=1e-5, atol=1e-7)


def test_schedules_work_as_optax_learning_rates(schedule_warnings):
  f = lr_schedule.create_cosine_learning_rate_schedule(1.0, 2, halfcos_epochs=2)
  tx = optax.sgd(f)
  params = jnp.zeros(())
  opt_state = tx.init(params)
  seen = []
  for _ in range(4):
    updates, opt_state = tx.update(jnp.ones(()), opt_state)
    seen.append(-float(updates))
  np.testing.assert_allclose(seen, [float(f(s)) for s in range(4)], rtol=1e-6)


# prefetch_iterator


def _prefetch(data_iter, buffer_size=1):
  with pytest.warns(DeprecationWarning, match='PrefetchIterator is deprecated'):
    return prefetch_iterator.PrefetchIterator(data_iter, buffer_size)


def test_prefetch_iterator_yields_everything_in_order():
  assert list(_prefetch(iter(range(20)), buffer_size=3)) == list(range(20))
  assert list(_prefetch(iter([]))) == []


def test_prefetch_iterator_reads_ahead_up_to_the_buffer_size():
  produced = []
  lock = threading.Lock()

  def source():
    for i in range(10):
      with lock:
        produced.append(i)
      yield i

  it = _prefetch(source(), buffer_size=3)
  deadline = time.monotonic() + 5
  while len(produced) < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
  time.sleep(0.05)
  assert len(produced) == 3  # filled the buffer, then waits for the consumer
  assert next(it) == 0
  assert list(it) == list(range(1, 10))


def test_prefetch_iterator_reraises_the_source_error_after_the_items_before_it():
  def source():
    yield 1
    yield 2
    raise KeyError('bad record')

  it = _prefetch(source(), buffer_size=5)
  assert [next(it), next(it)] == [1, 2]
  with pytest.raises(KeyError, match='bad record'):
    next(it)


def test_prefetch_iterator_close_stops_reading():
  def endless():
    i = 0
    while True:
      yield i
      i += 1

  it = _prefetch(endless(), buffer_size=2)
  assert next(it) == 0
  it.close()
  it._thread.join(timeout=5)
  assert not it._thread.is_alive()
  rest = list(it)  # what was buffered before close, then the end
  assert rest == list(range(1, 1 + len(rest))) and len(rest) <= 2


def test_module_names_match_flax():
  assert early_stopping.EarlyStopping is EarlyStopping
  for name in (
    'create_constant_learning_rate_schedule',
    'create_stepped_learning_rate_schedule',
    'create_cosine_learning_rate_schedule',
  ):
    assert callable(getattr(lr_schedule, name))
