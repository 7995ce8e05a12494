#!/usr/bin/env bash
# Trained bundles at 100k, 1M and 10M items (synthetic data), each with an index inside, for
# benchmarks/service_load.py: FAISS HNSW at 100k and 1M, the recommended IVF-PQ spec at 10M (HNSW over
# 10M vectors is hours of CPU here; docs/scale.md). One epoch with in-batch negatives: model quality does not matter there,
# only the catalogue size and the serving path. On a 2-core machine (shared): about 1.5 min to train
# and 0.5 min to index at 100k; 5-9 min to train and 2 min to index at 1M
# (eval.batch_size=256 keeps the full-ranking evaluation's score matrix at 1 GB at 1M items).
#
# At 10M: 2,000 users (the full-ranking evaluation's top-k over 10M scores costs about 0.1 s per user
# here: 10,000 users took an hour per split), batches of 1,024 (the ID table's dense Adam step over
# 10M x 64 dominates a step), 32 users per evaluation batch (32 x 10M scores = 1.3 GB); peak memory
# about 16 GB.
#
#   bash benchmarks/make_load_bundles.sh            # 100k and 1m
#   bash benchmarks/make_load_bundles.sh 100k       # one size
#   bash benchmarks/make_load_bundles.sh 10m        # the 10M-item bundle
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
        10m) spec="synthetic:n_users=2000,n_items=10000000,attributes_per_item=0"
            extra=(--set eval.batch_size=32 --set train.batch_size=1024 --set model.item_features=false) ;;
        *) echo "unknown size $size (100k, 1m or 10m)" >&2; exit 2 ;;
    esac
    out="runs/bench/synthetic-$size"
    recindex train --config configs/beauty_two_tower.toml --dataset "$spec" \
        --set train.epochs=1 --set train.negatives=in_batch --set train.patience=1 "${extra[@]}" \
        --out "$out" --overwrite --quiet
    if [ "$size" = 10m ]; then
        recindex index build "$out" --backend "faiss:IVF4096,PQ64x4fsr,RFlat" --param nprobe=64 \
            --param k_factor=4 --overwrite
    else
        recindex index build "$out" --backend faiss:HNSW32 --param ef=128 --overwrite
    fi
done
