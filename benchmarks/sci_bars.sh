#!/usr/bin/env bash
# Everything SCI's bars need, trained where missing, then every part of benchmarks/sci_bars.py.
# On a 2-core machine: the plain two-tower bundle 15 min (skipped when present), each SymmAligner run
# 40-80 min (the symmetric loss reads the whole catalogue through the query tower at every batch), the
# two-stage decoders 2 min each; the compare part 10 min.
#
#   bash benchmarks/sci_bars.sh                  # all parts, Beauty
#   bash benchmarks/sci_bars.sh compare          # one part: sweep | compare | ids | cost | sports
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then parts=(sweep compare ids cost); fi
out=runs/bench/sci
lambdas=(0.1 0.3 1.0)  # swept on validation; lambda = 0 is the plain bundle

train() {  # train OUT [--set ...]: the two-tower recipe with overrides, trained once
    local path="$1"; shift
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_two_tower.toml "$@" --out "$path" --quiet
}
chosen() {  # the lambda bundle chosen on validation by the sweep part
    python -c "import json; r = json.load(open('$out/sweep.json')); print(r['rows'][r['chosen']]['bundle'])"
}
sweep_runs() {
    train runs/bench/beauty
    local runs=(--run "lambda 0 (plain)=runs/bench/beauty")
    for lambda in "${lambdas[@]}"; do
        train "runs/sci/beauty-lambda$lambda" --set "sci.symmetric_weight=$lambda"
        runs+=(--run "lambda $lambda=runs/sci/beauty-lambda$lambda")
    done
    # the cheaper mirror (the batch's positives as the swapped term's negatives), at the smallest lambda
    train runs/sci/beauty-lambda0.1-in-batch --set sci.symmetric_weight=0.1 --set 'sci.swapped_negatives="in_batch"'
    runs+=(--run "lambda 0.1, in-batch mirror=runs/sci/beauty-lambda0.1-in-batch")
    python benchmarks/sci_bars.py --out "$out" sweep "${runs[@]}"
}
two_stage() {  # two_stage OUT INDEX TOWERS: the URI issue's two-stage decoder on a fixed index
    local path="$1" index="$2" towers="$3"
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_uri.toml --set "uri.index=\"$index\"" \
        --set uri.generate_items=true --set uri.ranker_epochs=0 --set "uri.init_from=$towers" \
        --out "$path" --quiet
}

for part in "${parts[@]}"; do
    case "$part" in
        sweep) sweep_runs ;;
        compare)
            [ -f "$out/sweep.json" ] || sweep_runs
            python benchmarks/sci_bars.py --out "$out" compare --plain runs/bench/beauty --sci "$(chosen)" ;;
        ids)
            [ -f "$out/sweep.json" ] || sweep_runs
            sci="$(chosen)"
            two_stage runs/uri/beauty-two-stage-rq-kmeans rq_kmeans runs/bench/beauty  # the URI issue's baseline
            two_stage runs/sci/beauty-two-stage-ci-plain sci runs/bench/beauty
            two_stage "runs/sci/beauty-two-stage-ci-$(basename "$sci")" sci "$sci"
            python benchmarks/sci_bars.py --out "$out" ids --plain runs/bench/beauty --sci "$sci" \
                --two-stage "RQ-KMeans IDs (plain towers)=runs/uri/beauty-two-stage-rq-kmeans" \
                --two-stage "CI IDs (plain towers)=runs/sci/beauty-two-stage-ci-plain" \
                --two-stage "CI IDs (SymmAligner towers)=runs/sci/beauty-two-stage-ci-$(basename "$sci")" ;;
        cost)
            python benchmarks/sci_bars.py --out "$out" cost
            python benchmarks/sci_bars.py --out "$out/in-batch" cost --set 'sci.swapped_negatives="in_batch"' ;;
        sports)
            train runs/bench/sports --dataset sports
            [ -f "$out/sweep.json" ] || sweep_runs
            lambda=$(python -c "import json; r = json.load(open('$out/sweep.json')); print(r['rows'][r['chosen']]['symmetric_weight'])")
            train runs/sci/sports --dataset sports --set "sci.symmetric_weight=$lambda"
            python benchmarks/sci_bars.py --out "$out/sports" compare --plain runs/bench/sports --sci runs/sci/sports ;;
        *) echo "unknown part $part (sweep, compare, ids, cost, sports)" >&2; exit 2 ;;
    esac
done
