"""Lint of gin_configs/t5x without T5X: syntax (gin's own parser), includes, our imports and
configurables, and the binding parameters of our configurables against their signatures."""

import ast
import importlib.util
import os

import pytest
from gin import config_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_DIR = os.path.join(ROOT, "gin_configs", "t5x")
FILES = sorted(f for f in os.listdir(GIN_DIR) if f.endswith(".gin"))
# Upstream T5X files our configs include (verified to exist in google-research/t5x).
T5X_INCLUDES = {
    "t5x/configs/runs/pretrain.gin",
    "t5x/examples/t5/t5_1_1/base.gin",
    "t5x/examples/t5/t5_1_1/small.gin",
    "t5x/examples/t5/t5_1_1/tiny.gin",
}
# Macros defined by T5X's pretrain.gin / t5_1_1/base.gin that our files may use.
T5X_MACROS = {
    "OPTIMIZER",
    "MODEL",
    "MODEL_DIR",
    "TRAIN_STEPS",
    "BATCH_SIZE",
    "VOCABULARY",
    "MIXTURE_OR_TASK_NAME",
    "TASK_FEATURE_LENGTHS",
    "DROPOUT_RATE",
}


class _Delegate(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_name, evaluate):
    return ("REF", scoped_name)

  def macro(self, name):
    return ("MACRO", name)


def _statements(name):
  with open(os.path.join(GIN_DIR, name)) as f:
    return list(config_parser.ConfigParser(f.read(), _Delegate()))


def _module_defs(module):
  """{top-level name: set of parameter names} of a module's source, without importing it."""
  spec = importlib.util.find_spec(module)
  assert spec is not None and spec.origin, f"module {module} not found"
  tree = ast.parse(open(spec.origin).read())
  out = {}
  for node in tree.body:
    if isinstance(node, ast.FunctionDef):
      out[node.name] = {a.arg for a in node.args.args + node.args.kwonlyargs}
    elif isinstance(node, ast.ClassDef):
      init = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
      out[node.name] = {a.arg for a in init[0].args.args[1:]} if init else set()
  return out


def _our_configurables():
  """{"normgrowth_jax.<module>.<name>": params}, T5X-lazy names resolved to their modules."""
  import normgrowth_jax.t5x as ng_t5x

  defs = {}
  for module in (
      "normgrowth_jax.tracking",
      "normgrowth_jax.data.vocab",
      "normgrowth_jax.t5x.metrics",
      "normgrowth_jax.t5x.optimizer",
  ):
    for name, params in _module_defs(module).items():
      defs[f"{module}.{name}"] = params
  for name, sub in ng_t5x._LAZY.items():  # pylint: disable=protected-access
    defs[f"normgrowth_jax.t5x.{name}"] = defs[f"normgrowth_jax.t5x.{sub}.{name}"]
  return defs


def _walk_values(v):
  if isinstance(v, tuple) and len(v) == 2 and v[0] in ("REF", "MACRO"):
    yield v
  elif isinstance(v, (list, tuple)):
    for x in v:
      yield from _walk_values(x)
  elif isinstance(v, dict):
    for x in v.values():
      yield from _walk_values(x)


@pytest.mark.parametrize("name", FILES)
def test_gin_file_lints(name):
  statements = _statements(name)
  ours = _our_configurables()
  aliases, defined = {}, set()
  kinds = {type(s).__name__ for s in statements}
  assert "ImportStatement" in kinds
  for st in statements:
    kind = type(st).__name__
    if kind == "ImportStatement":
      alias = st.alias or st.module.split(".")[-1]
      aliases[alias] = st.module
      if st.module.startswith("normgrowth_jax"):
        assert importlib.util.find_spec(st.module) is not None, st.module
    elif kind == "IncludeStatement":
      if st.filename.startswith("gin_configs/"):
        assert os.path.isfile(os.path.join(ROOT, st.filename)), st.filename
        for inc in _statements(os.path.basename(st.filename)):
          if type(inc).__name__ == "BindingStatement" and not inc.arg_name:
            defined.add(inc.selector)
      else:
        assert st.filename in T5X_INCLUDES, f"unknown T5X include {st.filename}"
    elif kind == "BindingStatement":
      if not st.arg_name:
        defined.add(st.selector)
      selectors = [st.selector] + [r for k, r in _walk_values(st.value) if k == "REF"]
      for sel in selectors:
        alias, _, rest = sel.partition(".")
        module = aliases.get(alias)
        if module and module.startswith("normgrowth_jax"):
          full = f"{module}.{rest}"
          assert full in ours, f"{name}: {sel} -> {full} is not defined"
          if sel == st.selector and st.arg_name:
            assert st.arg_name in ours[full], f"{name}: {full} has no parameter {st.arg_name}"
  for st in statements:
    if type(st).__name__ == "BindingStatement":
      for k, macro in _walk_values(st.value):
        if k == "MACRO":
          assert macro in defined | T5X_MACROS, f"{name}: macro %{macro} undefined"


def test_one_line_include_binds_both_hooks():
  sts = _statements("norm_tracking.gin")
  selectors = {(s.selector, s.arg_name) for s in sts if type(s).__name__ == "BindingStatement"}
  assert ("models.EncoderDecoderModel", "optimizer_def") in selectors
  assert ("ng_t5x.TrackedOptimizer", "base") in selectors
  incs = [s.filename for s in sts if type(s).__name__ == "IncludeStatement"]
  assert incs == ["gin_configs/t5x/norm_metrics.gin"]
  metric_sel = {
      (s.selector, s.arg_name)
      for s in _statements("norm_metrics.gin")
      if type(s).__name__ == "BindingStatement"
  }
  assert ("trainer.Trainer", "weight_metrics_computer") in metric_sel


def test_paper_recipe_values():
  b = {
      (s.selector, s.arg_name): s.value
      for s in _statements("pretrain_t5_1_1_base_c4.gin")
      if type(s).__name__ == "BindingStatement"
  }
  assert b[("TRAIN_STEPS", "")] == 2**19
  assert b[("BATCH_SIZE", "")] * b[("TASK_FEATURE_LENGTHS", "")]["inputs"] == 65536
  assert b[("utils.SaveCheckpointConfig", "period")] == 5000
  assert b[("utils.create_learning_rate_scheduler", "warmup_steps")] == 10000
  assert b[("utils.create_learning_rate_scheduler", "factors")] == "constant * rsqrt_decay"
