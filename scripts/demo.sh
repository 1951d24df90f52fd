#!/usr/bin/env bash
# The whole pipeline on generated tiny stand-ins (random weights, real architectures):
#   tiny assets -> FaceMAE / VideoMAE / audio vectors -> hcmw feature dump -> MER emotion evaluation
#   -> short k-fold LoRA fine-tuning.
# Run through `make demo`; PYTHON and DEMO_DIR may be set by the caller.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEMO_DIR=${DEMO_DIR:-demo_out}
export TINY_ASSETS="$DEMO_DIR/assets"
export DEMO_FEATURES="$DEMO_DIR/encoder_features"
export DEMO_OUT="$DEMO_DIR"

step() { printf '\n== %s\n' "$*"; }

step "1/5 tiny weights and datasets -> $TINY_ASSETS"
"$PYTHON" scripts/make_tiny_assets.py "$TINY_ASSETS"

step "2/5 FaceMAE (face frames), VideoMAE (videos) and audio (their sound) vectors -> $DEMO_FEATURES"
"$PYTHON" extract_mae_embedding.py --input "$TINY_ASSETS/hcmw/frames" --output "$DEMO_FEATURES/mae_340_UTT" \
    --checkpoint "$TINY_ASSETS/weights/mae_face_tiny.pth" --model face_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_maeVideo_embedding.py --input "$TINY_ASSETS/hcmw/videos" --output "$DEMO_FEATURES/maeV_199_UTT" \
    --checkpoint "$TINY_ASSETS/weights/video_mae_tiny.pth" --model video_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_audio_embedding.py --input "$TINY_ASSETS/hcmw/videos" --output "$DEMO_FEATURES/HL-UTT" \
    --model_dir "$TINY_ASSETS/hubert" --device cpu --num_workers 0

step "3/5 Emotion-LLaMA features of the mind-wandering clips -> $DEMO_DIR/features"
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo.yaml --dataset hcmw_caption

step "4/5 emotion recognition on the MER-format clips -> $DEMO_DIR/emotion_eval"
echo "(the tiny model's weights are random: accuracy near 0 and garbled answers are expected here;"
echo " with the released Emotion-LLaMA checkpoint the same command gives real predictions)"
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo_mer.yaml --dataset feature_face_caption,mer2024_caption

step "5/5 k-fold LoRA fine-tuning -> $DEMO_DIR/train"
"$PYTHON" train.py --cfg-path train_configs/demo.yaml --options run.overwrite=true

step "5/5 (MER) instruction tuning on the MER-format clips, validated on held-out clips -> $DEMO_DIR/train_mer"
"$PYTHON" train.py --cfg-path train_configs/demo_mer.yaml --options run.overwrite=true

printf '\ndemo finished: outputs under %s\n' "$DEMO_DIR"
