"""Write datasets/roco-ccby/: the CC BY rows of ../shared/data/roco-sample (the real ROCO
figures whose articles allow redistribution with attribution), same layout and splits,
plus NOTICE.md with the attribution and every row's licence and source article.

    python tools/make_roco_ccby.py [--source ../shared/data/roco-sample] [--out datasets/roco-ccby]

Refuses to write over an existing --out. The rows, their bytes and their order are the
source's: only the licence filter is applied.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
LICENCE = "CC BY"

NOTICE_HEAD = """# roco-ccby: real ROCO radiology figures under CC BY, with attribution

{rows} figures (train {train} / validation {validation} / test {test}, split by PubMed
Central article) from open-access articles published under the Creative Commons
Attribution licence (CC BY), with the captions their authors wrote and the UMLS concept ids
ROCO extracted from them. Images were downscaled so that the longest side is at most
256 px (JPEG, quality 90): a change to the original figures, as CC BY permits.

Cite ROCO: O. Pelka, S. Koitka, J. Rueckert, F. Nensa, C. M. Friedrich. Radiology Objects
in COntext (ROCO): A Multimodal Image Dataset. MICCAI Workshop LABELS 2018.
Captions and concept ids: the roco-dataset repository of razorx89 (commit a1f0ad6c),
data/test/radiology/. Images: ROCO's test-split figures as committed in the medclip
repository of Kaushalya (commit e6e01fb4), images/.

Each figure is (c) the authors of its article, licensed CC BY
(https://creativecommons.org/licenses/by/4.0/). The table lists every row: its ROCO id,
the PubMed Central article it comes from (https://www.ncbi.nlm.nih.gov/pmc/articles/<id>/)
and its licence; the same facts are in each row's `pmc_id` and `license` columns.

| split | image_id | PMC article | licence |
|---|---|---|---|
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "data" / "roco-sample"))
    ap.add_argument("--out", default=str(ROOT / "datasets" / "roco-ccby"))
    args = ap.parse_args(argv)
    source, out = Path(args.source), Path(args.out)
    if not source.is_dir():
        print(f"error: --source {source} is not a directory", file=sys.stderr)
        return 2
    if out.exists():
        print(f"error: --out {out} exists; remove it or choose another", file=sys.stderr)
        return 2
    tables = {}
    for split in ("train", "validation", "test"):
        files = sorted(source.glob(f"{split}-*.parquet"))
        if not files:
            print(f"error: no {split}-*.parquet in --source {source}", file=sys.stderr)
            return 2
        table = pq.ParquetDataset([str(f) for f in files]).read()
        tables[split] = table.filter(pc.equal(table.column("license"), LICENCE))
    out.mkdir(parents=True)
    lines = []
    for split, table in tables.items():
        pq.write_table(table, out / f"{split}-00000-of-00001.parquet", row_group_size=128,
                       compression="zstd")
        for image_id, pmc, lic in zip(*(table.column(c).to_pylist()
                                        for c in ("image_id", "pmc_id", "license"))):
            lines.append(f"| {split} | {image_id} | {pmc} | {lic} |")
    sizes = {s: t.num_rows for s, t in tables.items()}
    (out / "NOTICE.md").write_text(NOTICE_HEAD.format(rows=sum(sizes.values()), **sizes)
                                   + "\n".join(lines) + "\n")
    print(f"wrote {out}: {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
