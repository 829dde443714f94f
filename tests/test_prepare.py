"""Tests of data/prepare.py and of the shipped datasets (no apt lists needed)."""
import gzip, importlib.util, os, unicodedata
import pytest

import minitbt.datasets as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "data")
TASKS = ["ddtp-en-de", "debian-summ"]

_spec = importlib.util.spec_from_file_location("prepare", os.path.join(DATA, "prepare.py"))
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

EN = """Package: foo
Description-md5: aaa
Description-en: frobnicate   the widgets
 Foo frobnicates widgets
 very\tquickly.
 .
 Features:
  * fast
  * small

Package: foo-doc
Description-md5: bbb
Description-en: documentation for foo
 This package contains the documentation.

Package: bar
Description-md5: ccc
Description-en: bar tool
 Bar does things.
 .
 It has two paragraphs.

Package: bar-dummy
Description-md5: ddd
Description-en: bar tool
 Bar does things.
"""

DE = """Package: foo
Description-md5: aaa
Description-de: Widgets frobnizieren
 Foo frobniziert Widgets
 sehr schnell.
 .
 Funktionen:
  * schnell
  * klein

Package: foo-doc
Description-md5: bbb
Description-de: documentation for foo
 Dieses Paket enthält die Dokumentation.
 .
 Ein zweiter Absatz.

Package: bar
Description-md5: ccc
Description-de: Bar-Werkzeug
 Bar macht Dinge.
"""

PACKAGES = """Package: foo
Source: foo-src (1.2-3)
Version: 1.2-3+b1
Description-md5: aaa

Package: foo-doc
Source: foo-src
Description-md5: bbb

Package: bar
Version: 1.0
Description-md5: ccc
"""


def test_parse_deb822_and_descriptions():
    stanzas = list(P.iter_stanzas(EN))
    assert [s["Package"] for s in stanzas] == ["foo", "foo-doc", "bar", "bar-dummy"]
    en = P.read_translations(EN, "en")
    assert en["aaa"] == ("foo", "frobnicate the widgets",
                         ["Foo frobnicates widgets very quickly.", "Features: * fast * small"])
    assert en["bbb"][2] == ["This package contains the documentation."]
    de = P.read_translations(DE, "de")
    assert de["aaa"][1:] == ("Widgets frobnizieren",
                             ["Foo frobniziert Widgets sehr schnell.", "Funktionen: * schnell * klein"])
    assert P.split_description("synopsis only") == ("synopsis only", [])


def test_source_packages():
    by_pkg, by_md5 = P.source_packages(PACKAGES)
    assert by_pkg == {"foo": "foo-src", "foo-doc": "foo-src", "bar": "bar"}
    assert by_md5 == {"aaa": "foo-src", "bbb": "foo-src", "ccc": "bar"}


def test_build_tasks_cleaning():
    en, de = P.read_translations(EN, "en"), P.read_translations(DE, "de")
    by_pkg, by_md5 = P.source_packages(PACKAGES)
    tasks = P.build_tasks(en, de, lambda md5, pkg: by_md5.get(md5) or by_pkg.get(pkg, pkg))
    mt = [(s, t) for s, t, _ in tasks["ddtp-en-de"]]
    # synopses (foo-doc: target == source, dropped), then paragraphs of foo only
    # (foo-doc and bar have different paragraph counts)
    assert mt == [("frobnicate the widgets", "Widgets frobnizieren"),
                  ("bar tool", "Bar-Werkzeug"),
                  ("Foo frobnicates widgets very quickly.", "Foo frobniziert Widgets sehr schnell."),
                  ("Features: * fast * small", "Funktionen: * schnell * klein")]
    summ = tasks["debian-summ"]
    # bar-dummy's description is a prefix of bar's, different text: kept; its package
    # is not in Packages so its source package is its own name
    assert [p for _, _, p in summ] == ["foo-src", "foo-src", "bar", "bar-dummy"]
    assert summ[0][:2] == ("Foo frobnicates widgets very quickly. Features: * fast * small",
                           "frobnicate the widgets")
    # duplicated source: only the first target is kept
    assert P.clean_pairs([("a", "x", "p"), ("a", "y", "q"), ("b", "b", "p"), ("", "z", "p")]) \
        == [("a", "x", "p")]


def test_split_by_source_package():
    names = [f"pkg{i}" for i in range(1000)] * 3          # repeated names: one split each
    split_of = P.assign_splits(names, seed=0)
    assert set(split_of) == set(names) and set(split_of.values()) == {"train", "valid", "test"}
    counts = {s: sum(v == s for v in split_of.values()) for s in P.SPLITS}
    assert counts == {"train": 900, "valid": 50, "test": 50}
    assert P.assign_splits(reversed(names), seed=0) == split_of   # order-independent
    assert P.assign_splits(names, seed=1) != split_of


@pytest.mark.parametrize("task", TASKS)
def test_shipped_files(task):
    d = os.path.join(DATA, task)
    assert os.path.exists(os.path.join(d, "README.md"))
    seen = {}
    for split in P.SPLITS:
        src, tgt = P.read_split(d, split)
        assert len(src) == len(tgt) > 1000
        assert all(src) and all(tgt)
        seen[split] = set(src)
    # no source text in two splits
    assert not (seen["train"] & seen["valid"] or seen["train"] & seen["test"]
                or seen["valid"] & seen["test"])
    with gzip.open(os.path.join(d, "valid.source.gz"), "rb") as f:
        assert f.read().decode("utf-8").count("\n") == len(seen["valid"])


@pytest.mark.parametrize("task", TASKS)
def test_shipped_tokenizer_round_trip(task):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(DATA, task, "tokenizer.json"))
    assert tok.get_vocab_size() == 8000
    assert [tok.token_to_id(s) for s in P.SPECIALS] == [0, 1, 2, 3]
    sentences = ["This package contains the development files for libfoo (version 2.0).",
                 "A simple, fast text editor: it supports C/C++, Python and Rust!"]
    if task == "ddtp-en-de":
        sentences += ["Dieses Paket enthält die Dokumentation für größere Übersetzungen.",
                      "Echtzeit-Strategiespiel über antike Kriegsführung"]
    for s in sentences:
        ids = tok.encode(s).ids
        assert 3 not in ids
        assert tok.decode(ids) == unicodedata.normalize("NFKC", s)
    assert tok.decode(tok.encode("ﬁle").ids) == "file"                # NFKC ligature


def test_read_split_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.source.gz.*prepare"):
        P.read_split(str(tmp_path), "train")


def test_prepare_user_task(tmp_path):
    src_dir, out = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    n = 200
    (src_dir / "train.source").write_text("".join(f"hello  world {i}\n" for i in range(n)))
    with gzip.open(src_dir / "train.target.gz", "wt") as f:
        f.write("".join(f"hallo welt {i}\n" for i in range(n)))
    counts = D.prepare_user_task(str(src_dir), str(out), vocab_size=100)
    assert counts == {"train": 180, "valid": 10, "test": 10}
    pairs = []
    for split in P.SPLITS:
        s, t = P.read_split(str(out), split)
        assert [a.split()[-1] for a in s] == [b.split()[-1] for b in t]   # still aligned
        pairs += s
    assert sorted(pairs) == sorted(f"hello world {i}" for i in range(n))
    assert os.path.exists(out / "tokenizer.json")


def test_prepare_with_another_tasks_tokenizer(tmp_path, capsys):
    """--tokenizer TASK: the new task reuses TASK's tokenizer.json (a model trained on TASK can start
    it with --init); a folder without one is refused with one line and exit 2."""
    from minitbt.cli import main
    from minitbt.data import load_tokenizer, same_tokenizer
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    (src_dir / "train.source").write_text("".join(f"a long description {i}\n" for i in range(40)))
    (src_dir / "train.target").write_text("".join(f"summary {i}\n" for i in range(40)))
    shipped = os.path.join(ROOT, "data", "ddtp-en-de")
    assert main(["prepare", str(src_dir), "--out", str(tmp_path / "t"), "--kind", "summarization",
                 "--tokenizer", shipped]) == 0
    assert same_tokenizer(load_tokenizer(str(tmp_path / "t")), load_tokenizer(shipped))
    assert main(["prepare", str(src_dir), "--out", str(tmp_path / "u"), "--tokenizer", str(src_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no tokenizer.json" in err[0]
    assert not os.path.exists(tmp_path / "u")
