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
#   bash benchmarks/make_load_bundles.sh 1m-trained # a 1M bundle trained enough for an index to follow
#   SEED=1 bash benchmarks/make_load_bundles.sh 1m-trained   # another training seed: ...-1m-trained-s1
#
# 1m-trained: the one-epoch bundles leave nearly every item vector where initialisation put it (noise an
# index cannot partition: IVF-PQ at nprobe 32 finds 0.07-0.23 of exact search's top 100 there). This
# one trains 12 epochs on 20,000 users over 1M items in 200 clusters, each item with 8 of 2,000
# attribute tokens (drawn mostly from its cluster's set), so the items no user touched still get a
# vector from their content (the item tower leaves their untrained ID embedding out). Validation is
# evaluated once, after the last epoch. About 20 min on 2 cores (47 s an epoch, then the full-ranking
# evaluation of 20,000 users over 1M items on validation and test), 5.7 GB peak; then the recommended
# index `faiss:IVF2048,PQ64x4fsr,RFlat` (nprobe 32, k_factor 4).
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
        1m-trained) spec="synthetic:n_users=20000,n_items=1000000,n_clusters=200,n_attributes=2000,attributes_per_item=8"
            extra=(--set eval.batch_size=256 --set train.epochs=12 --set train.eval_every=12 --set train.patience=12) ;;
        10m) spec="synthetic:n_users=2000,n_items=10000000,attributes_per_item=0"
            extra=(--set eval.batch_size=32 --set train.batch_size=1024 --set model.item_features=false) ;;
        *) echo "unknown size $size (100k, 1m, 1m-trained or 10m)" >&2; exit 2 ;;
    esac
    seed="${SEED:-0}"
    out="runs/bench/synthetic-$size"
    if [ "$seed" != 0 ]; then out="$out-s$seed"; fi
    # later --set values win: 1m-trained's epochs and patience replace the one epoch here
    recindex train --config configs/beauty_two_tower.toml --dataset "$spec" \
        --set train.epochs=1 --set train.negatives=in_batch --set train.patience=1 "${extra[@]}" \
        --set "train.seed=$seed" --out "$out" --overwrite --quiet
    if [ "$size" = 10m ]; then
        recindex index build "$out" --backend "faiss:IVF4096,PQ64x4fsr,RFlat" --param nprobe=64 \
            --param k_factor=4 --overwrite
    elif [ "$size" = 1m-trained ]; then
        recindex index build "$out" --backend "faiss:IVF2048,PQ64x4fsr,RFlat" --param nprobe=32 \
            --param k_factor=4 --overwrite
    else
        recindex index build "$out" --backend faiss:HNSW32 --param ef=128 --overwrite
    fi
done
