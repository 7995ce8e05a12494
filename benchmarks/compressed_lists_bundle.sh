#!/usr/bin/env bash
# A learned index with 4-bit PQ fast-scan lists against the same index with vector lists (MFLI's float16,
# CI's and URI's float32), on a trained bundle (issue 21: "the learned index with compressed lists keeps test
# Recall@10 within 1% of its float16 figure"). The refine depth is chosen on the validation split: the
# smallest of REFINES whose validation Recall@10 is within 1% of the vector lists'; the test split is
# then read once per index.
#
#   benchmarks/compressed_lists_bundle.sh runs/mfli-beauty            # an MFLI bundle (mfli backend)
#   BACKEND=ci REFINES="2 4 8" benchmarks/compressed_lists_bundle.sh runs/sci-beauty
#   BACKEND=uri benchmarks/compressed_lists_bundle.sh runs/uri-beauty      # URI's leaves (float32 vectors)
#
# Writes OUT (default BUNDLE/compressed-lists) with one JSON per evaluation and summary.md.
set -euo pipefail
BUNDLE=${1:?usage: $0 BUNDLE}
BACKEND=${BACKEND:-mfli}
REFINES=${REFINES:-1 2 4 8}
OUT=${OUT:-$BUNDLE/compressed-lists}
mkdir -p "$OUT"
recindex() { python -m recindex "$@"; }
case "$BACKEND" in
  mfli) FLOAT="mfli:storage=fp16"; CODES="mfli:storage=pq4" ;;
  ci) FLOAT="ci"; CODES="ci:compress=pq4" ;;
  uri) FLOAT="uri"; CODES="uri:compress=pq4" ;;
  *) echo "BACKEND must be mfli, ci or uri" >&2; exit 2 ;;
esac
recindex index build "$BUNDLE" --backend "$FLOAT" --name float-lists --overwrite
recindex index build "$BUNDLE" --backend "$CODES" --name pq4-lists --overwrite
recindex evaluate "$BUNDLE" --split valid --index float-lists --json "$OUT/float-valid.json" >/dev/null
base=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['recall@10'])" "$OUT/float-valid.json")
chosen=""
for r in $REFINES; do
  recindex evaluate "$BUNDLE" --split valid --index pq4-lists --param "refine=$r" --json "$OUT/pq4-r$r-valid.json" >/dev/null
  got=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['metrics']['recall@10'])" "$OUT/pq4-r$r-valid.json")
  echo "validation Recall@10: vector lists $base, pq4 refine=$r $got"
  if python -c "import sys; sys.exit(0 if float(sys.argv[2]) >= 0.99 * float(sys.argv[1]) else 1)" "$base" "$got"; then
    chosen=$r; break
  fi
done
chosen=${chosen:-${REFINES##* }}
recindex evaluate "$BUNDLE" --split test --index float-lists --json "$OUT/float-test.json" >/dev/null
recindex evaluate "$BUNDLE" --split test --index pq4-lists --param "refine=$chosen" --json "$OUT/pq4-test.json" >/dev/null
python - "$OUT" "$chosen" <<'PY'
import json, sys
out, chosen = sys.argv[1], sys.argv[2]
f, p = (json.load(open(f"{out}/{n}-test.json"))["metrics"] for n in ("float", "pq4"))
lines = ["| index | refine (chosen on validation) | test Recall@10 | NDCG@10 | Recall@50 | vs vector lists |", "|---|---|---|---|---|---|"]
for name, m, r in (("vector lists (mfli float16, ci and uri float32)", f, "-"), ("pq4 lists", p, chosen)):
    lines.append(f"| {name} | {r} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@50']:.4f} | {m['recall@10'] / f['recall@10'] - 1:+.2%} |")
text = "\n".join(lines)
open(f"{out}/summary.md", "w").write(text + "\n")
print(text)
PY
