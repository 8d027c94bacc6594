"""Mistakes a type checker must report in user code: each marked line must raise exactly the
named pyright error.

`# pyright: ignore[rule]` hides the expected error, and reportUnnecessaryTypeIgnoreComment
(on for this file only) turns the comment itself into an error the day the checker stops
reporting the mistake, so the typing check can fail in both directions.
"""
# pyright: reportUnnecessaryTypeIgnoreComment=error

from __future__ import annotations

import jax
import optax

import flaxlike as nn
from flaxlike import struct
from flaxlike.training import train_state


class Block(nn.Module):
  features: int
  use_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, use_bias=self.use_bias)(x)


class Pair(struct.PyTreeNode):
  a: int
  b: int = 0


@struct.dataclass
class Point:
  x: float


def mistakes() -> None:
  Block(features='four')  # pyright: ignore[reportArgumentType]  (wrong field type)
  Block(4, use_bais=False)  # pyright: ignore[reportCallIssue]  (misspelled field)
  Block(4, nmae='block')  # pyright: ignore[reportCallIssue]  (misspelled name=)
  print(Block(4).featuers)  # pyright: ignore[reportAttributeAccessIssue]  (misspelled attribute)
  print(Pair(1).replace(a=2).c)  # pyright: ignore[reportAttributeAccessIssue]  (no such field)
  Point(x='origin')  # pyright: ignore[reportArgumentType]  (wrong field type)
  train_state.TrainState.create(  # pyright: ignore[reportCallIssue]  (misspelled params=)
    apply_fn=Block(4).apply, parms={}, tx=optax.sgd(0.1)
  )
  point = Point(x=1.0)
  point.x = 2.0  # pyright: ignore[reportAttributeAccessIssue]  (frozen: use .replace)
  # pyright types a class decorated by a dataclass_transform function as the class alone
  # (docs/porting.md, "Type checkers"); this line fails the check the day it stops.
  point.replace(x=2.0)  # pyright: ignore[reportAttributeAccessIssue]  (pyright limitation)
