"""Independent float64 NumPy references (direct loops) for the layer numerics tests."""

import itertools
import math

import numpy as np


def same_pads(n, k, s):
  """TensorFlow/XLA 'SAME': output ceil(n/s), the odd padding element goes high."""
  out = -(-n // s)
  total = max((out - 1) * s + k - n, 0)
  return (total // 2, total - total // 2)


def pads_for(mode, in_spatial, ks, strides, kdil):
  """(low, high) zero pads and the np.pad mode for a Conv padding spec."""
  kd = [(k - 1) * d + 1 for k, d in zip(ks, kdil)]
  if mode == 'SAME':
    return [same_pads(n, k, s) for n, k, s in zip(in_spatial, kd, strides)], 'constant'
  if mode == 'VALID':
    return [(0, 0)] * len(ks), 'constant'
  if mode in ('CIRCULAR', 'REFLECT'):
    return [((k - 1) // 2, k // 2) for k in kd], {'CIRCULAR': 'wrap', 'REFLECT': 'reflect'}[mode]
  if mode == 'CAUSAL':
    return [(kd[0] - 1, 0)], 'constant'
  if isinstance(mode, int):
    return [(mode, mode)] * len(ks), 'constant'
  return [(p, p) if isinstance(p, int) else tuple(p) for p in mode], 'constant'


def dilate(x, dil):
  """Inserts d-1 zeros between elements along spatial axes 1..-2."""
  shape = list(x.shape)
  for ax, d in enumerate(dil, start=1):
    shape[ax] = (x.shape[ax] - 1) * d + 1
  out = np.zeros(shape, x.dtype)
  out[(slice(None),) + tuple(slice(None, None, d) for d in dil)] = x
  return out


def conv(x, k, strides, padding, input_dil, kernel_dil, groups=1):
  """Cross-correlation, channels last: x (N, *S, C), k (*K, C//groups, F)."""
  x = np.asarray(x, np.float64)
  k = np.asarray(k, np.float64)
  ks = k.shape[:-2]
  xd = dilate(x, input_dil)
  pads, mode = pads_for(padding, xd.shape[1:-1], ks, strides, kernel_dil)
  xp = np.pad(xd, [(0, 0)] + list(pads) + [(0, 0)], mode=mode)
  kd = [(kk - 1) * d + 1 for kk, d in zip(ks, kernel_dil)]
  out_sp = [(n - kk) // s + 1 for n, kk, s in zip(xp.shape[1:-1], kd, strides)]
  cin_g = k.shape[-2]
  f_g = k.shape[-1] // groups
  y = np.zeros((x.shape[0], *out_sp, k.shape[-1]))
  for o in itertools.product(*map(range, out_sp)):
    for j in itertools.product(*map(range, ks)):
      pos = tuple(oi * s + ji * d for oi, ji, s, d in zip(o, j, strides, kernel_dil))
      patch = xp[(slice(None),) + pos]  # (N, C)
      for g in range(groups):
        y[(slice(None),) + o + (slice(g * f_g, (g + 1) * f_g),)] += (
          patch[:, g * cin_g : (g + 1) * cin_g] @ k[j][:, g * f_g : (g + 1) * f_g]
        )
  return y


def conv_local(x, k, ks, strides, padding, kernel_dil):
  """Unshared conv: k (*out_spatial, C * prod(ks), F), patch axis ordered (C, *ks)."""
  x = np.asarray(x, np.float64)
  k = np.asarray(k, np.float64)
  pads, mode = pads_for(padding, x.shape[1:-1], ks, strides, kernel_dil)
  xp = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)], mode=mode)
  out_sp = k.shape[:-2]
  c = x.shape[-1]
  y = np.zeros((x.shape[0], *out_sp, k.shape[-1]))
  for o in itertools.product(*map(range, out_sp)):
    for jflat, j in enumerate(itertools.product(*map(range, ks))):
      pos = tuple(oi * s + ji * d for oi, ji, s, d in zip(o, j, strides, kernel_dil))
      patch = xp[(slice(None),) + pos]
      rows = [ci * math.prod(ks) + jflat for ci in range(c)]
      y[(slice(None),) + o] += patch @ k[o][rows]
  return y


def conv_transpose_full(x, k, strides, kernel_dil, transpose_kernel):
  """The uncropped transposed convolution as a scatter: input i, tap j lands at
  i*s + j*d.  With transpose_kernel the kernel is (*K, F, C) (Conv's layout, the exact
  gradient); otherwise (*K, C, F) applied spatially flipped, as lax.conv_transpose does."""
  x = np.asarray(x, np.float64)
  k = np.asarray(k, np.float64)
  ks = k.shape[:-2]
  if transpose_kernel:
    k = np.swapaxes(k, -1, -2)
  else:
    k = k[tuple(slice(None, None, -1) for _ in ks)]
  in_sp = x.shape[1:-1]
  full = [(n - 1) * s + (kk - 1) * d + 1 for n, s, kk, d in zip(in_sp, strides, ks, kernel_dil)]
  y = np.zeros((x.shape[0], *full, k.shape[-1]))
  for i in itertools.product(*map(range, in_sp)):
    for j in itertools.product(*map(range, ks)):
      pos = tuple(ii * s + jj * d for ii, jj, s, d in zip(i, j, strides, kernel_dil))
      y[(slice(None),) + pos] += x[(slice(None),) + i] @ k[j]
  return y


def avg_pool(x, window, strides, pads, count_include_pad):
  x = np.asarray(x, np.float64)
  xp = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)], constant_values=np.nan)
  out_sp = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, strides)]
  y = np.zeros((x.shape[0], *out_sp, x.shape[-1]))
  for o in itertools.product(*map(range, out_sp)):
    win = xp[
      (slice(None),) + tuple(slice(oi * s, oi * s + w) for oi, s, w in zip(o, strides, window))
    ]
    win = win.reshape(x.shape[0], -1, x.shape[-1])
    total = np.nansum(win, axis=1)
    count = math.prod(window) if count_include_pad else np.sum(~np.isnan(win), axis=1)
    y[(slice(None),) + o] = total / count
  return y


def reduce_pool(x, window, strides, pads, fn):
  x = np.asarray(x, np.float64)
  fill = -np.inf if fn is np.max else np.inf
  xp = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)], constant_values=fill)
  out_sp = [(n - w) // s + 1 for n, w, s in zip(xp.shape[1:-1], window, strides)]
  y = np.zeros((x.shape[0], *out_sp, x.shape[-1]))
  for o in itertools.product(*map(range, out_sp)):
    win = xp[
      (slice(None),) + tuple(slice(oi * s, oi * s + w) for oi, s, w in zip(o, strides, window))
    ]
    y[(slice(None),) + o] = fn(win.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
  return y
