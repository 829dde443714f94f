"""Build the two shipped datasets (ddtp-en-de, debian-summ) and their BPE tokenizers.

Source: Debian 12 "bookworm" main archive metadata, as fetched by
    apt-get -o Acquire::Languages=en,de update
into /var/lib/apt/lists (Translation-en, Translation-de, Packages; lz4-compressed).

    python data/prepare.py [--lists-dir DIR] [--out data] [--seed 0]

Output layout, one task per folder (also used for a user's own data, see
`prepare_user_task`):
    <task>/{train,valid,test}.{source,target}.gz   gzip text, one example per line
    <task>/tokenizer.json                          HF `tokenizers` BPE, ids 0-3 special
    <task>/README.md                               provenance and statistics
Dependencies: stdlib, numpy, `tokenizers`, and the `lz4` command-line tool.
"""
import argparse, gzip, os, re, shutil, subprocess, sys
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a clone
from minitbt.datasets import (REBUILD, SPECIALS, SPLITS, norm, read_lines, read_split,  # noqa: F401
                              stats_table, train_tokenizer, write_lines, write_task)

LISTS_DIR = "/var/lib/apt/lists"
PREFIX = "deb.debian.org_debian_dists_bookworm_"


# ----------------------------------------------------------------------------- parsing
def read_lz4(path):
    """Decompress an lz4 file with the `lz4` CLI and return its text."""
    if shutil.which("lz4") is None:
        sys.exit("prepare.py needs the `lz4` command-line tool: apt-get install -y lz4")
    if not os.path.exists(path):
        sys.exit(f"missing {path}; run: apt-get -o Acquire::Languages=en,de update")
    out = subprocess.run(["lz4", "-dc", path], check=True, capture_output=True).stdout
    return out.decode("utf-8")


def iter_stanzas(text):
    """Yield each deb822 stanza of `text` as a dict {field: value}.

    Stanzas are separated by blank lines; a line starting with a space or tab
    continues the previous field (kept, with its leading space, after a newline)."""
    for block in re.split(r"\n\s*\n", text):
        fields, key = {}, None
        for line in block.split("\n"):
            if line[:1] in (" ", "\t") and key is not None:
                fields[key] += "\n" + line
            elif ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        if fields:
            yield fields


def split_description(value):
    """Split a Description field into (synopsis, [paragraph, ...]), normalised.

    The first line is the synopsis; continuation lines form the long description,
    in which a line " ." is a paragraph break. Empty paragraphs are dropped."""
    first, _, rest = value.partition("\n")
    paragraphs = [norm(p) for p in re.split(r"\n[ \t]\.[ \t]*(?=\n|$)", "\n" + rest)]
    return norm(first), [p for p in paragraphs if p]


def read_translations(text, lang):
    """Map Description-md5 -> (package, synopsis, paragraphs) for one Translation-<lang> file
    (first occurrence of each md5, in file order)."""
    out = {}
    for st in iter_stanzas(text):
        md5, desc = st.get("Description-md5"), st.get("Description-" + lang)
        if md5 and desc is not None and md5 not in out:
            out[md5] = (st.get("Package", ""), *split_description(desc))
    return out


def source_packages(packages_text):
    """Map package name and Description-md5 -> source package (Source: minus version)."""
    by_pkg, by_md5 = {}, {}
    for st in iter_stanzas(packages_text):
        name = st.get("Package")
        if not name:
            continue
        src = st.get("Source", name).split()[0]
        by_pkg.setdefault(name, src)
        if st.get("Description-md5"):                   # shared md5: smallest source name
            by_md5[st["Description-md5"]] = min(src, by_md5.get(st["Description-md5"], src))
    return by_pkg, by_md5


# ------------------------------------------------------------------------- the pairs
def clean_pairs(triples):
    """Drop empty pairs, pairs whose target equals the source, and every repeat of a
    source already seen (so exact duplicates and alternative targets both go).
    `triples` are (source, target, source_package); order decides which one is kept."""
    seen, out = set(), []
    for src, tgt, pkg in triples:
        if src and tgt and src != tgt and src not in seen:
            seen.add(src)
            out.append((src, tgt, pkg))
    return out


def build_tasks(en, de, src_of):
    """Return {task: [(source, target, source_package), ...]} from parsed translations.

    ddtp-en-de: synopsis pairs, then paragraph pairs of descriptions whose English and
    German versions have the same number of paragraphs. debian-summ: every English long
    description (paragraphs joined) -> its synopsis."""
    synopses, paragraphs, summ = [], [], []
    for md5, (pkg, syn, paras) in en.items():
        spkg = src_of(md5, pkg)
        summ.append((" ".join(paras), syn, spkg))
        if md5 in de:
            _, syn_de, paras_de = de[md5]
            synopses.append((syn, syn_de, spkg))
            if len(paras) == len(paras_de):
                paragraphs.extend((a, b, spkg) for a, b in zip(paras, paras_de))
    return {"ddtp-en-de": clean_pairs(synopses + paragraphs), "debian-summ": clean_pairs(summ)}


def assign_splits(packages, seed=0, fractions=(0.90, 0.05, 0.05)):
    """Map each source package to a split by a seeded permutation of the sorted names."""
    names = sorted(set(packages))
    perm = np.random.default_rng(seed).permutation(len(names))
    n_train = int(round(fractions[0] * len(names)))
    n_valid = int(round(fractions[1] * len(names)))
    split_of_rank = lambda r: "train" if r < n_train else "valid" if r < n_train + n_valid else "test"
    return {names[i]: split_of_rank(rank) for rank, i in enumerate(perm)}


# ----------------------------------------------------------------------------- main
README = """# {task}

{what}

Built by `data/prepare.py` from Debian 12 "bookworm" **main** archive metadata as fetched by
apt (`{release}`): `{prefix}main_i18n_Translation-en`, `..._Translation-de` (Debian
Description Translation Project) and `..._main_binary-amd64_Packages` (for the `Source:` field).

Cleaning: whitespace collapsed (continuation lines joined; list bullets stay as text), empty
pairs and pairs with target == source dropped, each source text kept once (first
occurrence). Split train/valid/test ~90/5/5 **by source package** (seeded permutation of the
sorted source-package names, seed {seed}, shared by both tasks): no source package is in
two splits.

Files: `{{train,valid,test}}.{{source,target}}.gz` (gzip text, one example per line) and
`tokenizer.json` (HF `tokenizers` BPE, {vocab} tokens trained on {tok_on};
NFKC + Metaspace; `<pad>`=0, `<bos>`=1, `<eos>`=2, `<unk>`=3).

{table}

Licence: Debian archive metadata; each description (and its translation) is under the
licence of its package.

Rebuild (as root, from the repository root):

    {rebuild}
"""

TOKENIZER_FROM = {
    "ddtp-en-de": "English and German sides of the train split",
    "debian-summ": "the English and German sides of ddtp-en-de's train split: the same file as "
                   "ddtp-en-de's, one tokenizer for the Debian data, so that a translation model can "
                   "start a summarizer (`--init`)",
}

WHAT = {
    "ddtp-en-de": "Translation English -> German: Debian package synopses and the paragraphs "
                  "of long descriptions whose English and German versions have the same number "
                  "of paragraphs, aligned by `Description-md5`.",
    "debian-summ": "Summarization: English long description of a Debian package (paragraphs "
                   "joined by a space) -> its one-line synopsis (extreme summary, like XSum). "
                   "A few sources are very long (thousands of words): truncate or filter by "
                   "length when training.",
}


def release_date(lists_dir):
    """The 'Date:' of the bookworm InRelease file, or 'unknown'."""
    try:
        with open(os.path.join(lists_dir, PREFIX + "InRelease"), encoding="utf-8") as f:
            info = {k: v.strip() for k, v in (l.split(":", 1) for l in f if l[:1].isupper() and ":" in l)}
        return f"Debian {info.get('Version', '12')}, lists dated {info.get('Date', 'unknown')}"
    except OSError:
        return "lists date unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lists-dir", default=LISTS_DIR)
    ap.add_argument("--out", default="data")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=8000)
    args = ap.parse_args(argv)

    path = lambda name: os.path.join(args.lists_dir, PREFIX + name + ".lz4")
    en = read_translations(read_lz4(path("main_i18n_Translation-en")), "en")
    de = read_translations(read_lz4(path("main_i18n_Translation-de")), "de")
    by_pkg, by_md5 = source_packages(read_lz4(path("main_binary-amd64_Packages")))
    src_of = lambda md5, pkg: by_md5.get(md5) or by_pkg.get(pkg, pkg)
    print(f"parsed {len(en)} English and {len(de)} German descriptions")

    tasks = build_tasks(en, de, src_of)
    split_of = assign_splits([p for pairs in tasks.values() for _, _, p in pairs], args.seed)
    for task, pairs in tasks.items():
        splits = {s: ([a for a, _, p in pairs if split_of[p] == s],
                      [b for _, b, p in pairs if split_of[p] == s]) for s in SPLITS}
        task_dir = os.path.join(args.out, task)
        # one tokenizer for the Debian data: debian-summ reuses ddtp-en-de's (written first), so that
        # the translation model can start the summarizer (--init; docs/results.md, "Teachers")
        shared = os.path.join(args.out, "ddtp-en-de") if task == "debian-summ" else None
        write_task(task_dir, splits, args.vocab_size, kind="translation" if task == "ddtp-en-de" else "summarization",
                   tokenizer_from=shared)
        table = stats_table(task_dir)
        tok_on = TOKENIZER_FROM[task]
        with open(os.path.join(task_dir, "README.md"), "w", encoding="utf-8") as f:
            f.write(README.format(task=task, what=WHAT[task], release=release_date(args.lists_dir),
                                  prefix=PREFIX, seed=args.seed, vocab=args.vocab_size,
                                  tok_on=tok_on, table=table, rebuild=REBUILD))
        print(f"{task}: {len(pairs)} pairs\n{table}")


if __name__ == "__main__":
    main()
