#!/usr/bin/env bash
# The runs behind docs/results.md: every registered model on the three shared data sets, seeds 1-3,
# each with its configs/<model>.yaml defaults, selection on the validation split. The baselines' YAMLs
# read one sentence vector per utterance; here they read the same text front end as the seed models,
# adapted to the training labels and cross-fitted on long dialogues as the seed models' YAMLs ask
# (text.adapt_folds=auto), so each data set and seed pays for one adaptation, cached and shared by every
# model (BASELINE_TEXT=frozen gives the frozen MiniLM, BASELINE_TEXT=sentence their YAML), so every row sees the
# same text, except on MOSI, where the seed models fine-tune it end to end (their small_data settings),
# and MMMIE on IEMOCAP, which reads it with the frozen all-mpnet-base-v2 (its long_dialogues settings).
# A model/data pair whose summary.json exists is skipped, so a killed job resumes. Then
# `infofusion report` tables it.
#   bash benchmarks/results_matrix.sh [OUTPUT=runs/results] [DATA_ROOT=../shared/data]
set -euo pipefail
output=${1:-runs/results}
data_root=${2:-../shared/data}
bin=${INFOFUSION:-.venv/bin/infofusion}
declare -A specs=(
  [mosi]="$data_root/mosi-bclstm/mosi_bclstm_dev.pkl"
  [iemocap]="$data_root/iemocap"
  [meld]="$data_root/meld"
)
models=${MODELS:-"late_fusion bc_lstm tfn lmf mult misa mmim mmmie mind"}
seed_models=" mmim mmmie mind "
for data in ${DATASETS:-mosi iemocap meld}; do
  for model in $models; do
    run="$output/$data/$model"
    mkdir -p "$output/$data"
    [[ -f "$run/summary.json" ]] && continue
    text=()
    [[ $seed_models == *" $model "* ]] ||
      text=(--set "text.mode=${BASELINE_TEXT:-adapted}" --set text.adapt_folds=auto)
    start=$(date +%s)
    "$bin" train --model "$model" --data "${specs[$data]}" --seeds 1,2,3 --set train.threads=1 "${text[@]}" \
      --output "$run" > "$run.log" 2>&1 || { echo "FAILED $data $model (see $run.log)"; continue; }
    echo "$data $model $(( $(date +%s) - start )) s for 3 seeds"
  done
done
"$bin" report "$output"
