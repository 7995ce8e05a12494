#!/usr/bin/env bash
# Everything SCI's bars need, trained where missing, then every part of benchmarks/sci_bars.py.
# On a 2-core machine: the plain two-tower bundle 11 min (skipped when present); each SymmAligner run
# with the exact mirror 35-50 min (it reads the whole catalogue through the query tower at every batch),
# with the in-batch mirror 15-25 min; the two-stage decoders 2 min each; choices 8 min; compare 2 x 8 min;
# sports: its two bundles 25 min each, its compares 2 x 7 min.
#
#   bash benchmarks/sci_bars.sh                  # all parts, Beauty
#   bash benchmarks/sci_bars.sh compare          # one part: sweep | choices | compare | ids | cost | sports
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then parts=(sweep choices compare ids cost); fi
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
    # the cheaper mirror (the batch's positives as the swapped term's negatives), at the same lambdas
    for lambda in "${lambdas[@]}"; do
        train "runs/sci/beauty-lambda$lambda-in-batch" --set "sci.symmetric_weight=$lambda" \
            --set 'sci.swapped_negatives="in_batch"'
        runs+=(--run "lambda $lambda, in-batch mirror=runs/sci/beauty-lambda$lambda-in-batch")
    done
    python benchmarks/sci_bars.py --out "$out" sweep "${runs[@]}"
}
choose_ci() {  # CI's variants on validation, one chosen (choices.json)
    [ -f "$out/sweep.json" ] || sweep_runs
    python benchmarks/sci_bars.py --out "$out" choices --plain runs/bench/beauty --sci "$(chosen)"
}
ci_choice() {  # --place P --coarse C: CI's variant chosen on validation by the choices part
    [ -f "$out/choices.json" ] || choose_ci >&2
    python -c "import json; c = json.load(open('$out/choices.json'))['chosen']; print('--place', c['place'], '--coarse', c['coarse'])"
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
        choices) choose_ci ;;
        compare)
            [ -f "$out/sweep.json" ] || sweep_runs
            # shellcheck disable=SC2046  # the words of ci_choice are separate arguments
            python benchmarks/sci_bars.py --out "$out" compare --plain runs/bench/beauty --sci "$(chosen)" \
                $(ci_choice)
            # CI as the design notes read it (the backend's default), beside the chosen variant
            python benchmarks/sci_bars.py --out "$out/place-query" compare --plain runs/bench/beauty \
                --sci "$(chosen)" --place query --coarse items ;;
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
            # the setting chosen on Beauty's validation split, both of its knobs
            read -r lambda negatives < <(python -c "import json; r = json.load(open('$out/sweep.json')); c = r['rows'][r['chosen']]; print(c['symmetric_weight'], c['swapped_negatives'])")
            train runs/sci/sports --dataset sports --set "sci.symmetric_weight=$lambda" \
                --set "sci.swapped_negatives=\"$negatives\""
            # shellcheck disable=SC2046
            python benchmarks/sci_bars.py --out "$out/sports" compare --plain runs/bench/sports --sci runs/sci/sports \
                $(ci_choice)
            python benchmarks/sci_bars.py --out "$out/sports/place-query" compare --plain runs/bench/sports \
                --sci runs/sci/sports --place query --coarse items ;;
        *) echo "unknown part $part (sweep, choices, compare, ids, cost, sports)" >&2; exit 2 ;;
    esac
done
