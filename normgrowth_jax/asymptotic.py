"""Exact saturated limits: activations as truncated power series in rho.

The saturated network is sf(x; theta) = lim_{rho -> inf} f(x; rho * theta). Scaling every
parameter by rho makes each activation grow like a power of rho, so in limit mode an activation
is an `Asymptotic` value

    v(rho) ~= sum_j coef_j * rho ** power_j,      power_0 > power_1 > ...   (powers static)

and each op below maps series to series. One model definition serves both modes: every op is
polymorphic, so plain arrays get ordinary behaviour and `Asymptotic` values get the limit. A model
enters limit mode by lifting its first parameter-derived activation (usually the embedding
output) with `lift(x, 1)` and passing its parameters through `param(p, like=x)`.

Truncation rules (what the series means)
----------------------------------------
* `add` keeps every term of both summands (equal powers are merged), so a sum of a rho^4 and a
  rho^1 quantity carries both.
* Products (`dense`, `einsum`, `mul`) and elementwise maps that keep growing (`relu`, `gelu` for
  power > 0) keep only the LEADING term: the result is coef * rho^power + o(rho^power). Their own
  lower-order corrections are dropped. The lower terms of a series are therefore only those added
  explicitly by a sum, not a full expansion; they are used purely as tie-breakers (below), and a
  tie broken by them is exact only when no dropped correction lies between the two powers (true
  for T5: bias-free projections of an exact single-term input, plus a rho^1 position bias).
* A leading coefficient that is exactly zero for some element means "o(rho^power)" for that
  element: products and relu/gelu report 0 at the leading power (the correct limit of
  value / rho^power). The ops whose output is O(1) regardless of scale look further:
  - `tanh` / `sigmoid` (power > 0): the sign of the first NONZERO coefficient among the
    positive-power terms decides (tanh -> +-1, sigmoid -> 1 / 0); if all of them are exactly 0,
    the power-0 term is used (tanh(c0), sigmoid(c0)), and with no power-0 term the output is
    tanh(0) = 0 / sigmoid(0) = 0.5. Elementwise zero tests are exact (no tolerance).
  - `layer_norm` / `rms_norm` (power > 0, eps dropped): per row, the highest-power term whose row is
    not constant (layer_norm: std of the row > zero_rtol * max |row|) / not all zero (rms_norm)
    is normalised; if none, the power-0 term is normalised WITH eps; if none, the normalised
    part is 0 (the output is then just the bias).
  - `softmax` (power > 0) is lexicographic hard attention: among unmasked positions keep those
    whose leading coefficient is within `tie_rtol * max_j |coef_j|` (over the row's remaining
    candidates) of the row maximum, then refine the survivors with the next positive-power
    term, and so on. Exact ties (and ties within the tolerance) are split: uniformly if the
    series has no power-0 term, otherwise by an ordinary softmax of the power-0 coefficient over
    the survivors (the exact limit of softmax(s1 * rho + s0)). Masked positions are never
    chosen; a fully masked row gives all zeros (also in plain mode).

Example:
    >>> import jax.numpy as jnp
    >>> from normgrowth_jax import asymptotic as asy
    >>> s = asy.add(asy.lift(jnp.array([1.0, 1.0, 0.0]), 4),   # rho^4 logits, a tie
    ...             asy.lift(jnp.array([0.0, 2.0, 9.0]), 1))   # rho^1 bias breaks it
    >>> asy.leading(asy.softmax(s)).tolist()
    [0.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


@jax.tree_util.register_pytree_node_class
class Asymptotic:
  """A truncated series sum_j coef_j * rho**power_j with static powers, descending.

  Args:
      terms: sequence of (coef, power) pairs. Powers must be distinct; they are sorted in
          descending order. All coefficients must share one shape (use `add` to combine
          differently shaped terms: it broadcasts).

  Example:
      >>> x = Asymptotic([(jnp.ones(3), 1.0), (jnp.zeros(3), 2.0)])
      >>> x.power, x.shape
      (2.0, (3,))
  """

  __slots__ = ("terms",)

  def __init__(self, terms: Sequence[tuple[Any, float]]):
    terms = [(jnp.asarray(c), float(p)) for c, p in terms]
    if not terms:
      raise ValueError("Asymptotic needs at least one (coef, power) term.")
    powers = [p for _, p in terms]
    if len(set(powers)) != len(powers):
      raise ValueError(f"Asymptotic powers must be distinct, got {powers}; use asy.add to merge.")
    if not all(math.isfinite(p) for p in powers):
      raise ValueError(f"Asymptotic powers must be finite floats, got {powers}.")
    shapes = {c.shape for c, _ in terms}
    if len(shapes) != 1:
      raise ValueError(f"Asymptotic terms must share one shape, got {sorted(shapes)}; use asy.add.")
    self.terms = tuple(sorted(terms, key=lambda t: -t[1]))

  # -- pytree: coefficients are traced children, powers are static aux data.
  def tree_flatten(self):
    return tuple(c for c, _ in self.terms), tuple(p for _, p in self.terms)

  @classmethod
  def tree_unflatten(cls, powers, coefs):
    obj = object.__new__(cls)
    obj.terms = tuple(zip(coefs, powers))
    return obj

  # -- introspection
  @property
  def leading(self) -> Array:
    """Coefficient of the highest power."""
    return self.terms[0][0]

  @property
  def power(self) -> float:
    """The highest power."""
    return self.terms[0][1]

  @property
  def powers(self) -> tuple[float, ...]:
    return tuple(p for _, p in self.terms)

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(self.leading.shape)

  @property
  def ndim(self) -> int:
    return len(self.shape)

  @property
  def dtype(self):
    return jnp.result_type(*[c for c, _ in self.terms])

  def at(self, rho) -> Array:
    """Evaluate the (truncated) series at a finite rho."""
    return sum(c * jnp.asarray(rho, c.dtype) ** p for c, p in self.terms)

  def __repr__(self) -> str:
    return f"Asymptotic(shape={self.shape}, powers={self.powers})"

  # -- structural (linear) ops applied to every term
  def map_terms(self, fn: Callable[[Array], Array]) -> "Asymptotic":
    """Apply a LINEAR map (indexing, reshape, pooling ...) to every coefficient."""
    return Asymptotic([(fn(c), p) for c, p in self.terms])

  def __getitem__(self, idx) -> "Asymptotic":
    return self.map_terms(lambda c: c[idx])

  def reshape(self, *shape) -> "Asymptotic":
    return self.map_terms(lambda c: c.reshape(*shape))

  def transpose(self, *axes) -> "Asymptotic":
    return self.map_terms(lambda c: c.transpose(*axes))

  def swapaxes(self, a: int, b: int) -> "Asymptotic":
    return self.map_terms(lambda c: jnp.swapaxes(c, a, b))

  def astype(self, dtype) -> "Asymptotic":
    return self.map_terms(lambda c: c.astype(dtype))

  # -- arithmetic sugar (same semantics as the functions below)
  def __add__(self, other):
    return add(self, other)

  __radd__ = __add__

  def __sub__(self, other):
    return add(self, neg(other))

  def __rsub__(self, other):
    return add(other, neg(self))

  def __neg__(self):
    return neg(self)

  def __mul__(self, other):
    return mul(self, other)

  __rmul__ = __mul__


def is_asymptotic(x: Any) -> bool:
  """True for `Asymptotic` values (limit mode)."""
  return isinstance(x, Asymptotic)


def lift(x, power: float = 1.0) -> Asymptotic:
  """Wrap an array as a single-term series x * rho**power (enter limit mode)."""
  if is_asymptotic(x):
    raise TypeError("lift() got an Asymptotic already; lift plain arrays only.")
  return Asymptotic([(jnp.asarray(x), power)])


def leading(x) -> Array:
  """The leading coefficient of an Asymptotic, or the array itself in plain mode."""
  return x.leading if is_asymptotic(x) else x


def _power(x) -> float:
  return x.power if is_asymptotic(x) else 0.0


def _terms(x) -> tuple[tuple[Array, float], ...]:
  return x.terms if is_asymptotic(x) else ((jnp.asarray(x), 0.0),)


def _any_asy(*xs) -> bool:
  return any(is_asymptotic(x) for x in xs)


def param(p, like):
  """A parameter: `p` itself in plain mode, `lift(p, 1)` when `like` is Asymptotic."""
  return lift(p, 1.0) if is_asymptotic(like) else p


def neg(x):
  """-x."""
  return x.map_terms(jnp.negative) if is_asymptotic(x) else -x


def add(a, b):
  """a + b. In limit mode every term of both is kept; equal powers are summed.

  A plain array summand counts as power 0 (a constant that does not grow with rho).
  """
  if not _any_asy(a, b):
    return a + b
  by_power: dict[float, Array] = {}
  for c, p in _terms(a) + _terms(b):
    by_power[p] = by_power[p] + c if p in by_power else c
  shape = jnp.broadcast_shapes(*[c.shape for c in by_power.values()])
  return Asymptotic([(jnp.broadcast_to(c, shape), p) for p, c in by_power.items()])


def mul(a, b):
  """Elementwise a * b; in limit mode leading coefficients multiply and powers add."""
  if not _any_asy(a, b):
    return a * b
  return Asymptotic([(leading(a) * leading(b), _power(a) + _power(b))])


def einsum(spec: str, *operands):
  """jnp.einsum; in limit mode powers add and the leading coefficients are contracted.

  Plain operands count as power 0: pass parameters through `param(p, like)` first.
  """
  if not _any_asy(*operands):
    return jnp.einsum(spec, *operands)
  coef = jnp.einsum(spec, *[leading(o) for o in operands])
  return Asymptotic([(coef, sum(_power(o) for o in operands))])


def dense(x, kernel):
  """Contract the last axis of x with the first axis of `kernel` (x @ kernel).

  `kernel` is a parameter: when x is Asymptotic and kernel is a plain array it counts as
  power 1. A kernel that is already Asymptotic (e.g. `lift(W, 1)` for a first layer on raw,
  unscaled inputs) contributes its own power.
  """
  if not _any_asy(x, kernel):
    if kernel.ndim == 2:
      return _matmul(x, kernel)
    return jnp.tensordot(x, kernel, axes=(x.ndim - 1, 0))
  k_power = kernel.power if is_asymptotic(kernel) else 1.0
  coef = jnp.tensordot(leading(x), leading(kernel), axes=(leading(x).ndim - 1, 0))
  return Asymptotic([(coef, _power(x) + k_power)])


@jax.custom_vjp
def _matmul(x: Array, kernel: Array) -> Array:
  """x [..., in] @ kernel [in, out], whose kernel gradient is formed as (dy^T x)^T.

  Same values as `jnp.tensordot`; only the backward pass differs in layout. XLA CPU's
  matmul wants its right operand as [out, in]; for the default kernel gradient x^T dy it
  transposes the (often wide) activation gradient dy [tokens, out] element by element,
  which cost more than the matmuls themselves in T5's gated MLP (measured on CPU, t5-mini).
  Contracting dy^T x instead transposes x (shared by sibling projections such as wi_0/wi_1)
  and then only the small [out, in] result.
  """
  return jnp.tensordot(x, kernel, axes=(x.ndim - 1, 0))


def _matmul_fwd(x, kernel):
  return _matmul(x, kernel), (x, kernel)


def _matmul_bwd(res, dy):
  x, kernel = res
  dx = jnp.tensordot(dy, kernel, axes=(dy.ndim - 1, 1)).astype(x.dtype)  # [..., in]
  x2 = x.reshape(-1, x.shape[-1])  # [tokens, in]
  dy2 = dy.reshape(-1, dy.shape[-1])  # [tokens, out]
  dk_t = jax.lax.dot_general(dy2, x2, (((0,), (0,)), ((), ())))  # [out, in]
  return dx, dk_t.T.astype(kernel.dtype)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def relu(x):
  """max(x, 0); 1-homogeneous, so the limit is relu of the leading coefficient."""
  if not is_asymptotic(x):
    return jax.nn.relu(x)
  return Asymptotic([(jax.nn.relu(x.leading), x.power)])


def gelu(x, approximate: bool = False):
  """GELU (exact erf form by default, as in BERT; `approximate=True` is the tanh form).

  Limit: relu of the leading coefficient when power > 0, exact gelu when power == 0, and
  x / 2 (gelu's slope at 0) when power < 0.
  """
  if not is_asymptotic(x):
    return jax.nn.gelu(x, approximate=approximate)
  if x.power > 0:
    return Asymptotic([(jax.nn.relu(x.leading), x.power)])
  if x.power == 0:
    return Asymptotic([(jax.nn.gelu(x.leading, approximate=approximate), 0.0)])
  return Asymptotic([(0.5 * x.leading, x.power)])


def _lex_sign(x: Asymptotic) -> Array:
  """Per element, the sign of the first nonzero coefficient among positive-power terms."""
  sign = jnp.zeros(x.shape, x.dtype)
  for c, p in x.terms:
    if p <= 0:
      break
    sign = jnp.where(sign != 0, sign, jnp.sign(c).astype(x.dtype))
  return sign


def _power0(x: Asymptotic):
  return next((c for c, p in x.terms if p == 0), None)


def tanh(x):
  """tanh; limit: sign (lexicographic over terms, see module doc) when power > 0."""
  if not is_asymptotic(x):
    return jnp.tanh(x)
  if x.power < 0:
    return Asymptotic([(x.leading, x.power)])  # tanh(y) ~ y near 0
  c0 = _power0(x)
  rest = jnp.zeros(x.shape, x.dtype) if c0 is None else jnp.tanh(c0)
  sign = _lex_sign(x)
  return Asymptotic([(jnp.where(sign != 0, sign, rest), 0.0)])


def sigmoid(x):
  """Logistic sigmoid; limit: step function (1 / 0; lexicographic, see module doc)."""
  if not is_asymptotic(x):
    return jax.nn.sigmoid(x)
  c0 = _power0(x)
  rest = jnp.full(x.shape, 0.5, x.dtype) if c0 is None else jax.nn.sigmoid(c0)
  sign = _lex_sign(x)
  return Asymptotic([(jnp.where(sign != 0, (sign + 1) / 2, rest), 0.0)])


def _affine(xhat, scale, bias, like):
  """xhat * scale + bias with scale/bias as parameters (power 1 in limit mode)."""
  y = xhat
  if scale is not None:
    y = mul(y, param(scale, like))
  if bias is not None:
    y = add(y, param(bias, like))
  return y


def layer_norm(x, scale=None, bias=None, eps: float = 1e-6, zero_rtol: float = 1e-6):
  """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * scale + bias.

  Limit (power > 0): eps is dropped and each row is normalised using its highest-power term
  that is not constant (std > zero_rtol * max |coef| over the row); see the module doc. The
  output has power 1 when there is a scale or bias, else power 0.
  """
  if not is_asymptotic(x):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return _affine((x - mean) * jax.lax.rsqrt(var + eps), scale, bias, x)

  def normalise(c, p):
    d = c - jnp.mean(c, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(d), axis=-1, keepdims=True)
    if p == 0:
      return d * jax.lax.rsqrt(var + eps), True
    std = jnp.sqrt(var)
    ok = std > zero_rtol * jnp.max(jnp.abs(c), axis=-1, keepdims=True)
    return d / jnp.where(ok, std, 1), ok

  return _affine(_normalise_leading(x, normalise), scale, bias, x)


def rms_norm(x, scale=None, eps: float = 1e-6):
  """RMSNorm (T5 LayerNorm) over the last axis: x / sqrt(mean(x^2) + eps) * scale.

  Limit (power > 0): eps is dropped; each row uses its highest-power term that is not all
  zero (power-0 term with eps as a fallback). Output power 1 with a scale, else 0.
  """
  if not is_asymptotic(x):
    ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return _affine(x * jax.lax.rsqrt(ms + eps), scale, None, x)

  def normalise(c, p):
    ms = jnp.mean(jnp.square(c), axis=-1, keepdims=True)
    if p == 0:
      return c * jax.lax.rsqrt(ms + eps), True
    ok = ms > 0
    return c * jax.lax.rsqrt(jnp.where(ok, ms, 1)), ok

  return _affine(_normalise_leading(x, normalise), scale, None, x)


def _normalise_leading(x: "Asymptotic", normalise) -> "Asymptotic":
  """Each row normalised by its highest-power term that ``normalise(coef, power)`` accepts.

  ``normalise`` returns (normalised coef, ok [..., 1] or True); terms of negative power are
  never used. Rows no term accepts are 0. The result has power 0.
  """
  xhat = jnp.zeros(x.shape, x.dtype)
  chosen = jnp.zeros(x.shape[:-1] + (1,), bool)
  for c, p in x.terms:
    if p < 0:
      break
    normed, ok = normalise(c, p)
    xhat = jnp.where(~chosen & ok, normed, xhat)
    chosen = chosen | ok
  return lift(xhat, 0.0)


def _masked_softmax(s: Array, mask, axis: int) -> Array:
  """Softmax over `axis` restricted to mask; fully masked rows give zeros."""
  if mask is None:
    return jax.nn.softmax(s, axis=axis)
  mask = jnp.broadcast_to(mask, s.shape)
  m = jnp.max(jnp.where(mask, s, -jnp.inf), axis=axis, keepdims=True)
  m = jax.lax.stop_gradient(jnp.where(jnp.isfinite(m), m, 0))
  e = jnp.exp(jnp.where(mask, s - m, -jnp.inf))
  denom = jnp.sum(e, axis=axis, keepdims=True)
  return e / jnp.where(denom > 0, denom, 1)


def softmax(scores, mask=None, axis: int = -1, tie_rtol: float = 1e-6):
  """Softmax over `axis`; masked (mask == False) positions get weight 0.

  Args:
      scores: array or Asymptotic, e.g. [batch, heads, q, k] attention logits.
      mask: optional bool array broadcastable to scores (True = may attend).
      axis: the normalised axis.
      tie_rtol: in limit mode, coefficients within tie_rtol * max |coef| (over the row's
          candidates) of the maximum count as tied.

  Returns:
      Plain mode: the masked softmax (fully masked rows are all zeros). Limit mode with
      leading power > 0: an Asymptotic of power 0 holding lexicographic hard attention (see
      module doc); with leading power <= 0: the ordinary softmax of the power-0 coefficient
      (uniform over unmasked positions when there is none).
  """
  if not is_asymptotic(scores):
    return _masked_softmax(scores, mask, axis)
  cand = jnp.ones(scores.shape, bool) if mask is None else jnp.broadcast_to(mask, scores.shape)
  for c, p in scores.terms:
    if p <= 0:
      break
    mx = jnp.max(jnp.where(cand, c, -jnp.inf), axis=axis, keepdims=True)
    scale = jnp.max(jnp.where(cand, jnp.abs(c), 0), axis=axis, keepdims=True)
    cand = cand & (c >= mx - tie_rtol * scale)
  c0 = _power0(scores)
  if c0 is None:
    w = cand.astype(scores.dtype)
    w = w / jnp.maximum(jnp.sum(w, axis=axis, keepdims=True), 1)
  else:
    w = _masked_softmax(c0, cand, axis)
  return Asymptotic([(w, 0.0)])
