"""A config's parameter tree: initial values, shapes, logical axes, and the check of a loaded one.

The tree is T5X's (`token_embedder/embedding`, `encoder/layers_0/attention/query/kernel`, ...),
as `specdec.network.transformer(config)` defines it. `specdec.model` builds on this module, and
the checkpoint readers (`specdec.t5x_import`) check what they are about to read against it
without depending on the model class.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from specdec.config import T5Config
from specdec.network import transformer

Array = jax.Array
Params = Any  # Nested dict of float32 arrays, T5X's parameter tree.


def _dummy_inputs():
  return jnp.ones((1, 2), jnp.int32), jnp.ones((1, 2), jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def init_params(config: T5Config, rng: Array) -> Params:
  """Random parameters with T5X's initializers (boxed with their logical axis names)."""
  return transformer(config).init(rng, *_dummy_inputs())["params"]


def abstract_params(config: T5Config) -> Params:
  """The parameter tree of `config` as `jax.ShapeDtypeStruct`s, computed without any FLOPs."""
  return nn.unbox(jax.eval_shape(init_params, config, jax.random.PRNGKey(0)))


def logical_axes(config: T5Config) -> Params:
  """The parameter tree of `config` with a `PartitionSpec` of logical axis names at each leaf."""
  boxed = jax.eval_shape(init_params, config, jax.random.PRNGKey(0))
  return nn.get_partition_spec(boxed)


def flatten(tree: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  """A nested mapping → {key path: leaf}."""
  if hasattr(tree, "items"):
    out = {}
    for key, value in tree.items():
      out.update(flatten(value, prefix + (str(key),)))
    return out
  return {prefix: tree}


def check_params(config: T5Config, params: Params, *, source: str = "params") -> None:
  """Raises one ValueError naming every missing, unexpected and mis-shaped parameter."""
  check_tree(abstract_params(config), params, source=source)


def check_tree(expected_tree: Params, params: Params, *, source: str = "params") -> None:
  """`check_params` against an abstract parameter tree (`ShapeDtypeStruct` leaves)."""
  expected = {"/".join(k): v.shape for k, v in flatten(expected_tree).items()}
  try:
    found = {"/".join(k): tuple(np.shape(v)) for k, v in flatten(params).items()}
  except AttributeError as e:
    raise TypeError(f"{source}: parameters must be a nested dict of arrays") from e
  problems = []
  for name in sorted(set(expected) - set(found)):
    problems.append(f"missing {name} (expected shape {expected[name]})")
  for name in sorted(set(found) - set(expected)):
    problems.append(f"unexpected {name} (shape {found[name]})")
  for name in sorted(set(expected) & set(found)):
    if tuple(expected[name]) != found[name]:
      problems.append(f"{name}: expected shape {tuple(expected[name])}, found {found[name]}")
  if problems:
    raise ValueError(f"{source}: parameters do not match the config:\n  " + "\n  ".join(problems))
