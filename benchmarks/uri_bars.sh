#!/usr/bin/env bash
# Everything the URI bars need, trained where missing, then every part of benchmarks/uri_bars.py.
# On a 2-core machine: the two-tower bundles 10-25 min each (skipped when present), URI runs 5-8 min
# each (the decoder reads the two-tower bundle's encoders), two-stage baselines 1-2 min each.
#
#   bash benchmarks/uri_bars.sh                  # all parts
#   bash benchmarks/uri_bars.sh compare          # one part: ape | compare | curve | ablations | sports
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then parts=(ape compare curve ablations sports); fi
out=runs/bench/uri

two_tower() {  # two_tower OUT [--set ...]: the two-tower recipe, trained once
    local path="$1"; shift
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_two_tower.toml "$@" --out "$path" --quiet
}
uri() {  # uri OUT [--set ...]: the URI recipe (or a two-stage baseline with --set uri.index=...), once
    local path="$1"; shift
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_uri.toml "$@" --out "$path" --quiet
}
two_stage() {  # two_stage OUT INDEX [--set ...]: the same decoder by cross-entropy on a fixed index
    local path="$1" index="$2"; shift 2
    uri "$path" --set "uri.index=\"$index\"" --set uri.generate_items=true --set uri.ranker_epochs=0 "$@"
}

for part in "${parts[@]}"; do
    case "$part" in
        ape)
            two_tower runs/bench/beauty
            uri runs/uri/beauty-k16 --set uri.k=16
            uri runs/uri/beauty
            uri runs/uri/beauty-k64 --set uri.k=64
            python benchmarks/uri_bars.py --out "$out" ape --two-tower runs/bench/beauty \
                --uri runs/uri/beauty-k16 --uri runs/uri/beauty --uri runs/uri/beauty-k64 ;;
        compare)
            two_tower runs/bench/beauty
            uri runs/uri/beauty
            two_stage runs/uri/beauty-two-stage-kmeans kmeans
            two_stage runs/uri/beauty-two-stage-rq-kmeans rq_kmeans
            two_stage runs/uri/beauty-two-stage-rq-vae rq_vae
            two_stage runs/uri/beauty-two-stage-random random
            two_stage runs/uri/beauty-two-stage-uri-index runs/uri/beauty
            python benchmarks/uri_bars.py --out "$out" compare --uri runs/uri/beauty \
                --two-stage "k-means=runs/uri/beauty-two-stage-kmeans" \
                --two-stage "RQ-KMeans=runs/uri/beauty-two-stage-rq-kmeans" \
                --two-stage "RQ-VAE=runs/uri/beauty-two-stage-rq-vae" \
                --two-stage "Random=runs/uri/beauty-two-stage-random" \
                --two-stage "w/ URI index=runs/uri/beauty-two-stage-uri-index" ;;
        curve)
            uri runs/uri/beauty-k16 --set uri.k=16
            uri runs/uri/beauty
            uri runs/uri/beauty-k64 --set uri.k=64
            uri runs/uri/beauty-k16-l3 --set uri.k=16 --set uri.layers=3
            python benchmarks/uri_bars.py --out "$out" curve --run "k=16,L=2=runs/uri/beauty-k16" \
                --run "k=32,L=2=runs/uri/beauty" --run "k=64,L=2=runs/uri/beauty-k64" \
                --run "k=16,L=3=runs/uri/beauty-k16-l3" --beams 1 5 20 40 ;;
        ablations)
            uri runs/uri/beauty
            uri runs/uri/beauty-no-adaptive-weight --set uri.adaptive_weight=false
            uri runs/uri/beauty-no-sibling-negative --set uri.sibling_negatives=0 --set uri.ranker_random_negatives=10
            uri runs/uri/beauty-from-scratch --set 'uri.start_from=""'
            python benchmarks/uri_bars.py --out "$out" ablations --full runs/uri/beauty \
                --run "w/o adaptive weight=runs/uri/beauty-no-adaptive-weight" \
                --run "w/o sibling hard negative=runs/uri/beauty-no-sibling-negative" \
                --run "from scratch (no k-means start)=runs/uri/beauty-from-scratch" ;;
        sports)
            two_tower runs/bench/sports --dataset sports
            uri runs/uri/sports --dataset sports --set uri.init_from=runs/bench/sports
            two_stage runs/uri/sports-two-stage-kmeans kmeans --dataset sports --set uri.init_from=runs/bench/sports
            two_stage runs/uri/sports-two-stage-rq-kmeans rq_kmeans --dataset sports \
                --set uri.init_from=runs/bench/sports
            python benchmarks/uri_bars.py --out "$out/sports" compare --uri runs/uri/sports \
                --two-stage "k-means=runs/uri/sports-two-stage-kmeans" \
                --two-stage "RQ-KMeans=runs/uri/sports-two-stage-rq-kmeans" ;;
        *) echo "unknown part $part (ape, compare, curve, ablations, sports)" >&2; exit 2 ;;
    esac
done
