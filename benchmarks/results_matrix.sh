#!/usr/bin/env bash
# The runs behind docs/results.md: every registered model on the three shared data sets, seeds 1-3,
# the seed models (mmim, mmmie, mind) with their corpus's recipe (configs/recipes/CORPUS/MODEL.yaml),
# selection on the validation split. The baselines' YAMLs read one sentence vector per utterance; here
# they read the text the MMIM recipe of the corpus reads (adapted to the training labels, cross-fitted on
# IEMOCAP; fine-tuned on MOSI), so each data set and seed pays for one adaptation, cached and shared by
# every model (BASELINE_TEXT=frozen gives the frozen MiniLM, BASELINE_TEXT=sentence their YAML).
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
    text=(--recipe "$data")
    if [[ $seed_models != *" $model "* ]]; then
      folds=1; [[ $data == iemocap ]] && folds=2
      mode=${BASELINE_TEXT:-adapted}; [[ $data == mosi && -z ${BASELINE_TEXT:-} ]] && mode=finetune
      text=(--set "text.mode=$mode" --set "text.adapt_folds=$folds")
    fi
    start=$(date +%s)
    "$bin" train --model "$model" --data "${specs[$data]}" --seeds 1,2,3 --set train.threads=1 "${text[@]}" \
      --output "$run" > "$run.log" 2>&1 || { echo "FAILED $data $model (see $run.log)"; continue; }
    echo "$data $model $(( $(date +%s) - start )) s for 3 seeds"
  done
done
"$bin" report "$output"
