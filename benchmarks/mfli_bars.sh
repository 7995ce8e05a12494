#!/usr/bin/env bash
# Everything the MFLI bars need, trained where missing, then every part of benchmarks/mfli_bars.py.
# On a 2-core machine: two-tower bundles 10-25 min each (skipped when present), MFLI runs 5-10 min each
# (they start from the two-tower bundle of the same split), the 1M synthetic part about 15 min. Run it on
# a quiet machine: the 1M part times queries and inserts.
#
#   bash benchmarks/mfli_bars.sh                 # all parts
#   bash benchmarks/mfli_bars.sh compare         # one part: compare | cold | sports | ablations | synthetic
set -euo pipefail
cd "$(dirname "$0")/.."
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then parts=(compare cold sports ablations synthetic); fi
out=runs/bench/mfli

two_tower() {  # two_tower OUT [--set ...]: the two-tower recipe, trained once
    local path="$1"; shift
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_two_tower.toml "$@" --out "$path" --quiet
}
mfli() {  # mfli OUT [--set ...]: the MFLI recipe, trained once
    local path="$1"; shift
    [ -f "$path/manifest.json" ] || recindex train --config configs/beauty_mfli.toml "$@" --out "$path" --quiet
}

for part in "${parts[@]}"; do
    case "$part" in
        compare)
            two_tower runs/bench/beauty
            mfli runs/mfli/beauty
            python benchmarks/mfli_bars.py --out "$out" compare --mfli runs/mfli/beauty --two-tower runs/bench/beauty ;;
        cold)
            two_tower runs/bench/beauty-cold --set data.split=cold_item
            mfli runs/mfli/beauty-cold --set data.split=cold_item --set mfli.init_from=runs/bench/beauty-cold
            python benchmarks/mfli_bars.py --out "$out" compare --mfli runs/mfli/beauty-cold \
                --two-tower runs/bench/beauty-cold ;;
        sports)
            two_tower runs/bench/sports --dataset sports
            mfli runs/mfli/sports --dataset sports --set mfli.init_from=runs/bench/sports
            python benchmarks/mfli_bars.py --out "$out" compare --mfli runs/mfli/sports --two-tower runs/bench/sports ;;
        ablations)
            two_tower runs/bench/beauty
            mfli runs/mfli/beauty
            mfli runs/mfli/ablation-1-facet --set mfli.facets=joint
            mfli runs/mfli/ablation-no-delayed-start --set mfli.quant_start=0 --set mfli.level_gap=0
            mfli runs/mfli/ablation-quantized-loss-off --set mfli.quant_weight=0
            mfli runs/mfli/ablation-straight-through --set mfli.quant_gradient=straight_through
            python benchmarks/mfli_bars.py --out "$out" ablations --full runs/mfli/beauty \
                --run "1 facet instead of 3=runs/mfli/ablation-1-facet" \
                --run "no delayed start=runs/mfli/ablation-no-delayed-start" \
                --run "quantized loss off=runs/mfli/ablation-quantized-loss-off" \
                --run "quantized loss into the towers (straight-through)=runs/mfli/ablation-straight-through"
            # one facet on the cold-item split: what the content facets buy for items never trained on
            two_tower runs/bench/beauty-cold --set data.split=cold_item
            mfli runs/mfli/ablation-1-facet-cold --set data.split=cold_item \
                --set mfli.init_from=runs/bench/beauty-cold --set mfli.facets=joint
            python benchmarks/mfli_bars.py --out "$out" compare --mfli runs/mfli/ablation-1-facet-cold \
                --two-tower runs/bench/beauty-cold ;;
        synthetic)
            python benchmarks/mfli_bars.py --out "$out" synthetic --items 1000000 ;;
        *) echo "unknown part $part (compare, cold, sports, ablations, synthetic)" >&2; exit 2 ;;
    esac
done
