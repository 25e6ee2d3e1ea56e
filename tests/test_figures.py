"""The figures pipeline: the smoke profile end to end, verdict logic, the run cache, the CLI."""

import json
import math
import subprocess
import sys
import types

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_helpers import data_cache  # noqa: F401  (fixture)
from normgrowth_jax import saturation as sat
from normgrowth_jax.figures import core, fig1, fig2, fig3, fig4, paper, pipeline, registry, report
from normgrowth_jax.figures import runs, t5_runs
from normgrowth_jax.figures.verdict import check, verdict
from normgrowth_jax.models.small_lm import SmallLM, SmallLMConfig

# ----------------------------------------------------------------------------- smoke, end to end


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_cache):  # noqa: F811
  out = tmp_path_factory.mktemp("figures_smoke")
  results = pipeline.run(["all"], "smoke", out, out / "runs", progress=False)
  return out, results


def _numbers(x):
  if isinstance(x, dict):
    return [n for v in x.values() for n in _numbers(v)]
  if isinstance(x, list):
    return [n for v in x for n in _numbers(v)]
  return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []


def test_smoke_writes_every_declared_file_with_finite_numbers(smoke):
  out, results = smoke
  assert [r.name for r in results] == registry.available()
  for r in results:
    for suffix in (".png", ".pdf", ".json"):
      assert (out / f"{r.name}{suffix}").stat().st_size > 0
    assert all(str(f).startswith(str(out)) for f in r.files)
    numbers = _numbers(json.loads((out / f"{r.name}.json").read_text()))
    assert numbers and all(math.isfinite(n) for n in numbers), r.name
    assert r.verdict in ("reproduced", "partly", "not reproduced", "not comparable")
    assert r.criteria and r.setup and r.wall_s > 0
    assert r.cached_train_s == 0  # Fig. 5 reuses Fig. 1's runs, trained in this same call


def test_smoke_report_has_every_figure_and_verdict(smoke):
  out, results = smoke
  text = (out / "report.md").read_text()
  for r in results:
    assert f"| {r.name} | {r.title} | {r.verdict} |" in text
    assert f"![{r.name}]({r.name}.png)" in text
  assert "| jax |" in text and "| device |" in text
  saved = json.loads((out / "results.json").read_text())
  assert [f["verdict"] for f in saved["figures"]] == [r.verdict for r in results]


def test_fig4_numbers_equal_homogeneity_curve_for_the_same_model(smoke):
  out, _ = smoke
  cfg = fig4.CONFIGS["smoke"]
  saved = json.loads((out / "fig4.json").read_text())
  variant = fig4.Variant("postnorm", False)
  a = cfg.arch
  model = SmallLM(
      SmallLMConfig(  # built here, independently of the figure's cache
          vocab_size=cfg.vocab_size,
          num_layers=a.num_layers,
          d_model=a.d_model,
          d_ff=a.d_ff,
          num_heads=a.num_heads,
          max_len=cfg.seq_len,
          norm="postnorm",
          use_bias=False,
      )
  )
  tokens = fig4.inputs(cfg)
  f = lambda p, s=False: model.apply(
      {"params": p}, tokens, jnp.ones(tokens.shape, bool), saturated=s
  ).hidden_states[-1]
  params = model.init(jax.random.key(cfg.seeds[-1]), tokens)["params"]
  direct = np.asarray(
      sat.homogeneity_curve(f, lambda p: f(p, True), params, jnp.array([1.0, 10.0]))
  )
  plotted = np.asarray(saved["curves"][variant.label]["exact, per token"][-1])
  np.testing.assert_allclose(plotted[[0, -1]], direct, rtol=1e-5, atol=1e-6)
  assert saved["c"][0] == 1.0 and saved["c"][-1] == 10.0 and len(saved["c"]) == cfg.num_c


# ----------------------------------------------------------------------------- verdicts


def test_verdict_levels():
  yes, no, na = check("a", True), check("b", False), check("c", None)
  assert verdict([yes, yes]) == "reproduced"
  assert verdict([yes, no]) == "partly"
  assert verdict([no, no, na]) == "not reproduced"
  assert verdict([na]) == verdict([]) == "not comparable"
  assert verdict([yes, na]) == "reproduced"


GOOD4 = {
    ("prenorm_paper", True): (0.72, 0.96),
    ("prenorm_paper", False): (0.80, 0.99),
    ("postnorm", True): (0.09, 0.97),
    ("postnorm", False): (0.05, 0.97),
}


@pytest.mark.parametrize(
    "change, failing",
    [
        ({("postnorm", True): (0.75, 0.97)}, [0, 4]),  # post-norm above pre-norm at c = 1
        ({("postnorm", False): (0.90, 0.97)}, [1]),  # ... without biases
        ({("prenorm_paper", False): (0.80, 0.89)}, [2]),  # a curve ends below 0.9
        ({("prenorm_paper", True): (0.50, 0.96)}, [3]),  # pre-norm 0.2 off the paper
        ({("postnorm", True): (0.30, 0.97)}, [4]),  # post-norm 0.2 off the paper
    ],
)
def test_fig4_each_criterion_on_both_sides(change, failing):
  original = {"prenorm_paper": 0.70, "postnorm": 0.10}
  assert all(c.passed for c in fig4.judge(GOOD4, original))
  crit = fig4.judge({**GOOD4, **change}, original)
  assert [i for i, c in enumerate(crit) if not c.passed] == failing


def test_fig4_original_protocol_criteria_on_both_sides():
  crit = fig4.judge(GOOD4, {"prenorm_paper": 0.85, "postnorm": 0.05})
  assert [c.passed for c in crit[5:]] == [False, True]
  assert "original's protocol" in crit[5].text


class _Subject:
  label, baseline_label, paper_model = "m", "random init", "T5-base"


def test_fig2_criteria_on_both_sides():
  base = [{"rho": np.array([0.1, 0.1, 0.1, 0.1])}, {"rho": np.array([0.2, 0.2, 0.2, 0.2])}]
  high = {"measured": {"rho": np.array([0.5, 0.6, 0.1, 0.9])}, "baselines": base}
  rows, crit = fig2._criteria_and_rows(_Subject(), high)  # pylint: disable=protected-access
  assert [c.passed for c in crit] == [True, True]
  assert rows[0].paper == pytest.approx(np.mean(paper.FIG2["T5-base"]["pretrained"]))
  low = {"measured": {"rho": np.array([0.3, 0.0, 0.0, 0.0])}, "baselines": base}
  assert [c.passed for c in fig2._criteria_and_rows(_Subject(), low)[1]] == [False, False]
  one_of_four = {"measured": {"rho": np.array([0.9, 0.1, 0.1, 0.1])}, "baselines": base}
  assert [c.passed for c in fig2._criteria_and_rows(_Subject(), one_of_four)[1]] == [True, False]


# ----------------------------------------------------------------------------- files, errors


def test_write_numbers_refuses_nonfinite(tmp_path):
  ctx = core.FigureContext("smoke", tmp_path, tmp_path)
  with pytest.raises(ValueError, match=r"/a\[1\]"):
    core.write_numbers(ctx, "figX", {"a": [1.0, float("nan")]})
  assert not (tmp_path / "figX.json").exists()
  core.write_numbers(ctx, "figX", {"a": np.array([1.0, 2.0]), "missing": None})
  assert json.loads((tmp_path / "figX.json").read_text()) == {"a": [1.0, 2.0], "missing": None}


def test_unknown_figure_and_profile_are_named_with_the_valid_ones(tmp_path):
  with pytest.raises(ValueError, match=r"fig9; choose from: all, .*fig4"):
    registry.resolve(["fig9"])
  with pytest.raises(ValueError, match="smoke, quick, full"):
    pipeline.run(["fig4"], "huge", tmp_path, tmp_path, progress=False)
  with pytest.raises(ValueError, match=r"configs given for figures not made: \['fig6'\]"):
    pipeline.run(["fig4"], "smoke", tmp_path, tmp_path, progress=False, configs={"fig6": None})
  proc = subprocess.run(
      [sys.executable, "-m", "normgrowth_jax.figures", "fig9", "--out", str(tmp_path)],
      capture_output=True,
      text=True,
  )
  assert proc.returncode == 2 and "unknown figure(s) fig9" in proc.stderr
  assert not any(tmp_path.iterdir())
  readme = tmp_path / "README.md"
  readme.write_text("# no markers\n")
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.figures",
          "fig4",
          "--out",
          str(tmp_path / "out"),
          "--readme",
          str(readme),
      ],
      capture_output=True,
      text=True,
  )
  assert proc.returncode == 2 and "figures:begin" in proc.stderr
  assert not (tmp_path / "out").exists() and readme.read_text() == "# no markers\n"


def test_a_figure_module_missing_part_of_the_contract_is_refused(monkeypatch):
  fake = types.ModuleType("normgrowth_jax.figures.fig_fake")
  fake.NAME, fake.TITLE, fake.CONFIGS = "fig_fake", "A fake", {"smoke": None}
  fake.work = lambda cfg: 0
  fake.make = lambda ctx, cfg: None
  monkeypatch.setitem(sys.modules, fake.__name__, fake)
  with pytest.raises(
      TypeError,
      match=r"figure module normgrowth_jax\.figures\.fig_fake lacks "
      r"run_specs \(the contract: normgrowth_jax\.figures\.core\.FigureModule\)",
  ):
    registry.module("fig_fake")
  fake.run_specs = core.no_runs
  assert registry.module("fig_fake") is fake
  for name in registry.available() + list(registry.BEYOND_PAPER):
    assert registry.module(name).NAME == name


def test_readme_block_lists_verdicts_and_images():
  r = core.FigureResult("fig4", "Homogeneity", [], [], [check("up", True)], [])
  text = report.splice_readme(
      f"intro\n{report.README_BEGIN}\nstale\n{report.README_END}\nend",
      report.readme_block([r], "quick", "figures/quick"),
  )
  assert "stale" not in text and text.startswith("intro\n") and text.endswith("\nend")
  assert "| fig4 | Homogeneity | reproduced |" in text
  assert "![fig4](figures/quick/fig4.png)" in text


def test_report_marks_each_criterion_and_formats_spread():
  r = core.FigureResult(
      "fig4",
      "Homogeneity",
      [],
      [core.Row("x", 0.5, 0.25, 0.01, 3)],
      [check("up", True, 1, 2), check("down", False), check("n/a", None)],
      ["setup line"],
  )
  text = report.render([r], "quick")
  assert "| fig4 | Homogeneity | partly | 1 of 2 |" in text
  assert "0.250 ± 0.010 (n=3)" in text and "- setup line" in text
  assert "✅ pass" in text and "❌ fail" in text and "not comparable" in text


# ----------------------------------------------------------------------------- the run cache

TINY = "gin_configs/local/t5_tiny_bbc_adafactor.gin"
CACHE_BINDINGS = [
    "MIXTURE_OR_TASK_NAME='ng_span_corruption_botchan_bytes'",
    "BATCH_SIZE=2",
    "TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
    "WARMUP_STEPS=2",
    "CHECKPOINT_PERIOD=2",
    "LOG_EVERY=1",
]


@pytest.fixture()
def _fresh_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_config_hash_follows_every_binding(_fresh_gin):
  a = runs.resolved_config([TINY], CACHE_BINDINGS + ["TRAIN_STEPS=3"])
  b = runs.resolved_config([TINY], CACHE_BINDINGS + ["TRAIN_STEPS=4"])
  assert runs.config_hash(a) != runs.config_hash(b)
  assert runs.config_hash(a) == runs.config_hash(
      runs.resolved_config([TINY], CACHE_BINDINGS + ["TRAIN_STEPS=3"])
  )
  assert "figures-run-cache" not in a and "train.model_dir = %MODEL_DIR" in a


def test_train_cached_reuses_resumes_and_forces(tmp_path, data_cache, _fresh_gin):  # noqa: F811
  units = []
  ctx = core.FigureContext(
      "smoke", tmp_path, tmp_path / "runs", advance=lambda n=1, stage=None: units.append(n)
  )
  bindings = CACHE_BINDINGS + ["TRAIN_STEPS=3"]
  d = runs.train_cached(ctx, "t5", [TINY], bindings, 3)
  assert runs.is_finished(d) and sum(units) == 3
  assert d.parent == tmp_path / "runs" / "smoke" and d.name.startswith("t5-")
  first = (d / "norms.jsonl").read_text()
  assert [json.loads(l)["step"] for l in first.splitlines()] == [1, 2, 3]

  units.clear()  # reused within the call that trained it: no training, no cached time, and
  assert runs.train_cached(ctx, "t5", [TINY], bindings, 3) == d and units == []  # counted once
  assert (d / "norms.jsonl").read_text() == first and ctx.reused == {}
  later = core.FigureContext("smoke", tmp_path, tmp_path / "runs")  # a later call
  assert runs.train_cached(later, "t5", [TINY], bindings, 3) == d
  trained_s = json.loads((d / runs.DONE_FILE).read_text())["wall_s"]
  assert trained_s > 0 and later.reused == {d: trained_s}

  other = runs.run_dir(ctx, "t5", [TINY], CACHE_BINDINGS + ["TRAIN_STEPS=4"])
  assert other != d and not other.exists()  # a new config goes to a new directory

  (d / runs.DONE_FILE).unlink()  # an unfinished run resumes from its checkpoint
  runs.train_cached(ctx, "t5", [TINY], bindings, 3)
  assert (d / "norms.jsonl").read_text() == first

  forced = core.FigureContext("smoke", tmp_path, tmp_path / "runs", force=True)
  marker = d / "stale.txt"
  marker.write_text("x")
  assert runs.train_cached(forced, "t5", [TINY], bindings, 3) == d
  assert not marker.exists() and runs.is_finished(d)
  assert runs.train_cached(forced, "t5", [TINY], bindings, 3) == d  # once per call


def test_runs_trained_side_by_side_equal_runs_trained_one_after_another(
    tmp_path, data_cache, _fresh_gin
):  # noqa: F811
  specs = [
      runs.RunSpec(f"t5-seed{s}", (TINY,), (*CACHE_BINDINGS, "TRAIN_STEPS=3", f"SEED={s}"), 3)
      for s in (0, 1)
  ]
  rows = {}
  for workers in (1, 2):
    units = []
    ctx = core.FigureContext(
        "smoke",
        tmp_path,
        tmp_path / f"runs{workers}",
        advance=lambda n=1, stage=None: units.append(n),
    )
    dirs = runs.train_specs(ctx, [*specs, specs[0]], workers=workers)  # a repeat trains once
    assert dirs[0] == dirs[2] and all(runs.is_finished(d) for d in dirs) and sum(units) == 6
    rows[workers] = [(d / "norms.jsonl").read_text() for d in dirs[:2]]
    done = [json.loads((d / runs.DONE_FILE).read_text()) for d in dirs[:2]]
    # side by side, each run's cost is its share of the batch's wall time, below its own time
    assert all(("cost_s" in x) == (workers == 2) for x in done)
    assert all(x.get("cost_s", x["wall_s"]) <= x["wall_s"] for x in done)
  assert rows[1] == rows[2] and rows[1][0] != rows[1][1]


def test_a_figure_runs_saved_config_replays_with_the_trainer_alone(
    tmp_path, data_cache, _fresh_gin
):  # noqa: F811
  from normgrowth_jax.figures import t5_runs  # pylint: disable=g-import-not-at-top

  cfg = t5_runs.PROFILES["smoke"]
  ctx = core.FigureContext("smoke", tmp_path, tmp_path / "runs")
  d = runs.train_cached(ctx, "fig1", [t5_runs.GIN_FILE], t5_runs.bindings(cfg, 0), cfg.train_steps)
  replay = tmp_path / "replay"
  # a fresh process that imports nothing of figures/: every configurable is the trainer's
  subprocess.run(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.train",
          f"--gin_file={d / 'config.gin'}",
          f"--gin.MODEL_DIR='{replay}'",
      ],
      check=True,
      capture_output=True,
      cwd=tmp_path,
  )
  for f in ("norms.jsonl", "eval.jsonl"):
    assert (replay / f).read_text() == (d / f).read_text()


def test_pipeline_trains_every_declared_run_before_any_figure(tmp_path, monkeypatch):
  order = []
  monkeypatch.setattr(
      runs,
      "train_specs",
      lambda ctx, specs: order.append(("train", sorted(s.name for s in specs)))
      or [tmp_path / s.name for s in specs],
  )
  monkeypatch.setattr(
      fig4,
      "make",
      lambda ctx, cfg: order.append("fig4")
      or core.FigureResult("fig4", "F4", [], [], [check("c", True)], []),
  )
  monkeypatch.setattr(fig4, "run_specs", lambda ctx, cfg: [runs.RunSpec("b", (), (), 1)])
  monkeypatch.setattr(
      fig2,
      "make",
      lambda ctx, cfg: order.append("fig2")
      or core.FigureResult("fig2", "F2", [], [], [check("c", True)], []),
  )
  monkeypatch.setattr(fig2, "run_specs", lambda ctx, cfg: [runs.RunSpec("a", (), (), 1)])
  pipeline.run(["fig2", "fig4"], "smoke", tmp_path, tmp_path / "runs", progress=False)
  assert order == [("train", ["a", "b"]), "fig2", "fig4"]


# ----------------------------------------------------------------------------- Fig. 2 subjects


def _t5_dir_with_tokenizer(tmp_path):
  import tokenizers  # pylint: disable=g-import-not-at-top
  from test_hf_t5 import GATED, random_hf_tensors, write_checkpoint  # pylint: disable=g-import-not-at-top

  d = write_checkpoint(tmp_path / "tiny-t5", GATED, random_hf_tensors(GATED))
  words = "the a of to and in is was he it that his i with as had for at".split()
  vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.post_processor = tokenizers.processors.TemplateProcessing(
      single="$A </s>", special_tokens=[("</s>", 1)]
  )
  tok.save(str(d / "tokenizer.json"))
  return d


def test_hf_t5_directory_gives_encoder_and_decoder_subjects(tmp_path):
  from test_hf_t5 import GATED  # pylint: disable=g-import-not-at-top
  from normgrowth_jax.figures import subjects  # pylint: disable=g-import-not-at-top

  d = _t5_dir_with_tokenizer(tmp_path)
  sentences = ["the cat sat on the mat .", "he was in it and that was his"]
  enc, dec = subjects.hf_directory(d, sentences, seeds=(0,), max_len=12)
  assert enc.label.endswith("encoder") and dec.label.endswith("decoder")
  assert enc.paper_model is dec.paper_model is None  # width 16: not the paper's T5-base
  assert enc.mask.tolist()[0][:8] == [True] * 8 and not enc.mask[0, -1]  # "</s>" then padding
  for s, layers in ((enc, GATED["num_layers"]), (dec, GATED["num_decoder_layers"])):
    for params in (s.params, s.baselines[0]):
      out = subjects.per_layer(s, params, 1000.0)
      assert out["rho"].shape == out["limit"].shape == (layers,)
      assert np.all(np.abs(out["rho"]) <= 1 + 1e-5) and np.all(np.isfinite(out["limit"]))
      # rho = 1000 is close to the limit on random T5 weights in float32
      np.testing.assert_allclose(out["rho"], out["limit"], atol=0.05)


def test_hf_directory_errors_name_the_problem(tmp_path):
  from normgrowth_jax.figures import subjects  # pylint: disable=g-import-not-at-top

  with pytest.raises(ValueError, match="no config.json"):
    subjects.hf_directory(tmp_path, ["a b c d e"], seeds=(0,))
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
    subjects.hf_directory(tmp_path, ["a b c d e"], seeds=(0,))


def test_fig2_cli_refuses_a_bad_hf_model_dir_in_one_line(tmp_path, capsys):
  """Issue 17: each bad --hf_model_dir is one line on stderr and exit 2, before any work."""
  from normgrowth_jax.figures import __main__ as figures_main  # pylint: disable=g-import-not-at-top

  good = _t5_dir_with_tokenizer(tmp_path)
  torch_only = tmp_path / "torch_only"
  torch_only.mkdir()
  (torch_only / "config.json").write_text((good / "config.json").read_text())
  (torch_only / "pytorch_model.bin").write_bytes(b"")
  gpt2 = tmp_path / "gpt2"
  gpt2.mkdir()
  (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  no_tok = tmp_path / "no_tokenizer"
  no_tok.mkdir()
  for f in ("config.json", "model.safetensors"):
    (no_tok / f).write_bytes((good / f).read_bytes())
  cases = (
      (tmp_path / "missing", "not a directory"),
      (torch_only, "pytorch_model.bin"),
      (gpt2, "model_type 'gpt2'"),
      (no_tok, "no tokenizer.json"),
  )
  for d, reason in cases:
    rc = figures_main.main(
        [
            "fig2",
            "--hf_model_dir",
            str(d),
            "--out",
            str(tmp_path / "out"),
            "--profile",
            "smoke",
            "--no_progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and reason in err and str(d) in err, err
  assert not (tmp_path / "out").exists()


def test_only_base_size_models_meet_the_papers_levels():
  from normgrowth_jax.figures import subjects  # pylint: disable=g-import-not-at-top

  t5_base = {"model_type": "t5", "d_model": 768, "num_layers": 12}
  assert subjects.is_base_size(t5_base)
  assert not subjects.is_base_size(dict(t5_base, d_model=512, num_layers=6))  # t5-small
  assert not subjects.is_base_size(
      {"model_type": "roberta", "hidden_size": 1024, "num_hidden_layers": 24}
  )  # roberta-large


def test_fig2_level_criteria_need_a_matching_checkpoint():
  class T5Decoder:
    label, baseline_label, paper_model = "t5-base decoder", "random init", "T5-base"

  crit = fig2.level_criteria([], [])
  assert [c.passed for c in crit] == [None, None]
  near = {"measured": {"rho": np.array([0.2, 0.5, 0.88])}}
  far = {"measured": {"rho": np.array([0.2, 0.5, 0.60])}}
  assert [c.passed for c in fig2.level_criteria([T5Decoder()], [near])] == [True, None]
  assert [c.passed for c in fig2.level_criteria([T5Decoder()], [far])] == [False, None]


def test_report_keeps_figures_made_earlier_into_the_same_folder(tmp_path):
  made = lambda name, ok: core.FigureResult(
      name, name.upper(), [], [], [check("c", ok)], ["s"], wall_s=1.0
  )
  for name in ("fig2", "fig4"):
    (tmp_path / f"{name}.png").write_bytes(b"png")
  pipeline.write_report(tmp_path, [made("fig4", True)], "quick")
  merged = pipeline.write_report(tmp_path, [made("fig2", False)], "quick")
  assert [(r.name, r.verdict) for r in merged] == [
      ("fig2", "not reproduced"),
      ("fig4", "reproduced"),
  ]
  assert "| fig4 | FIG4 | reproduced |" in (tmp_path / "report.md").read_text()
  assert [r.name for r in pipeline.write_report(tmp_path, [made("fig2", True)], "smoke")] == [
      "fig2"
  ]  # another profile's figures are never mixed in


def test_report_adds_the_training_time_of_reused_cached_runs():
  r = core.FigureResult(
      "fig1", "F1", [], [], [check("c", True)], ["s"], wall_s=5.0, cached_train_s=450.0
  )
  assert core.FigureResult.from_json(r.to_json()).cached_train_s == 450.0
  text = report.render([r], "quick", total_s=5.0)
  assert "| fig1 | F1 | reproduced | 1 of 1 | 5 s + 7.5 min cached training |" in text
  assert "Total wall time: 5 s; with the training of the cached runs it reused, 7.6 min" in text


def test_fig2_declares_the_runs_it_draws_as_fig1_and_fig3_declare_them(tmp_path):
  # So `figures fig2` alone trains them, and in `all` the pipeline trains each once.
  ctx = core.FigureContext("smoke", tmp_path / "out", tmp_path / "runs")
  drawn = fig2.run_specs(ctx, fig2.CONFIGS["smoke"])
  declared = set(
      fig1.run_specs(ctx, fig1.CONFIGS["smoke"]) + fig3.run_specs(ctx, fig3.CONFIGS["smoke"])
  )
  assert set(drawn) <= declared
  assert [s.name for s in drawn] == [t5_runs.run_name(0), "fig3-prenorm_paper-causal-seed0"]
  assert fig2.run_specs(ctx, fig2.Fig2Config()) == []  # no runs of ours drawn: none declared
