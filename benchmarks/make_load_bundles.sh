#!/usr/bin/env bash
# Trained bundles at 100k and 1M items (synthetic data), each with a FAISS HNSW index inside, for
# benchmarks/service_load.py. One epoch with in-batch negatives: model quality does not matter there,
# only the catalogue size and the serving path. On a 2-core machine (shared): about 1.5 min to train
# and 0.5 min to index at 100k; 5-9 min to train and 2 min to index at 1M
# (eval.batch_size=256 keeps the full-ranking evaluation's score matrix at 1 GB at 1M items).
#
#   bash benchmarks/make_load_bundles.sh            # both
#   bash benchmarks/make_load_bundles.sh 100k       # one size
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
if [ ${#sizes[@]} -eq 0 ]; then sizes=(100k 1m); fi
for size in "${sizes[@]}"; do
    case "$size" in
        100k) spec="synthetic:n_users=20000,n_items=100000"; extra=() ;;
        # No attribute tokens at 1M and no content features in the model: keeps the one epoch within
        # minutes; filters are not what this benchmark measures.
        1m) spec="synthetic:n_users=10000,n_items=1000000,attributes_per_item=0"
            extra=(--set eval.batch_size=256 --set model.item_features=false) ;;
        *) echo "unknown size $size (100k or 1m)" >&2; exit 2 ;;
    esac
    out="runs/bench/synthetic-$size"
    recindex train --config configs/beauty_two_tower.toml --dataset "$spec" \
        --set train.epochs=1 --set train.negatives=in_batch --set train.patience=1 "${extra[@]}" \
        --out "$out" --overwrite --quiet
    recindex index build "$out" --backend faiss:HNSW32 --param ef=128 --overwrite
done
