#!/usr/bin/env bash
# The whole pipeline on generated tiny stand-ins (random weights, real architectures):
#   tiny assets -> FaceMAE / VideoMAE / audio vectors -> hcmw feature dump -> probe of the dump
#   -> session videos prepared, dumped, probed over people and time, the best set exported as a
#   detector and applied to the sessions, offline and live -> MER emotion evaluation -> short
#   k-fold LoRA fine-tuning.
# Run through `make demo`; PYTHON and DEMO_DIR may be set by the caller.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
DEMO_DIR=${DEMO_DIR:-demo_out}
export TINY_ASSETS="$DEMO_DIR/assets"
export DEMO_FEATURES="$DEMO_DIR/encoder_features"
export DEMO_OUT="$DEMO_DIR"

step() { printf '\n== %s\n' "$*"; }

step "1/6 tiny weights and datasets -> $TINY_ASSETS"
"$PYTHON" scripts/make_tiny_assets.py "$TINY_ASSETS"

step "2/6 FaceMAE (face frames), VideoMAE (videos) and audio (their sound) vectors -> $DEMO_FEATURES"
"$PYTHON" extract_mae_embedding.py --input "$TINY_ASSETS/hcmw/frames" --output "$DEMO_FEATURES/mae_340_UTT" \
    --checkpoint "$TINY_ASSETS/weights/mae_face_tiny.pth" --model face_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_maeVideo_embedding.py --input "$TINY_ASSETS/hcmw/videos" --output "$DEMO_FEATURES/maeV_199_UTT" \
    --checkpoint "$TINY_ASSETS/weights/video_mae_tiny.pth" --model video_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_audio_embedding.py --input "$TINY_ASSETS/hcmw/videos" --output "$DEMO_FEATURES/HL-UTT" \
    --model_dir "$TINY_ASSETS/hubert" --device cpu --num_workers 0

step "3/6 Emotion-LLaMA features of the mind-wandering clips -> $DEMO_DIR/features"
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo.yaml --dataset hcmw_caption

step "3/6 (shards) the same clips packed into WebDataset shards and dumped from them -> $DEMO_DIR/shards"
"$PYTHON" -m minigpt4.datasets.shards.pack --cfg-path eval_configs/demo.yaml --output "$DEMO_DIR/shards" \
    --shard_size 10 --overwrite
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo.yaml --dataset hcmw_caption --options \
    run.output_dir="$DEMO_DIR/features_from_shards" \
    "evaluation_datasets.hcmw_caption.build_info.shards=$DEMO_DIR/shards/hcmw-{000000..000002}.tar"
for file in "$DEMO_DIR"/features/*.npy "$DEMO_DIR/features/names.txt"; do
    cmp "$file" "$DEMO_DIR/features_from_shards/$(basename "$file")"
done
echo "the dump from shards is byte-identical to the dump from the folders"

step "3/6 (prepare) raw session videos -> tracked, aligned faces and sound cut into probe windows -> $DEMO_DIR/prepared"
export DEMO_PREPARED="$DEMO_DIR/prepared"
"$PYTHON" -m minigpt4.prepare --cfg-path eval_configs/demo_prepare.yaml --overwrite
"$PYTHON" extract_mae_embedding.py --input "$DEMO_PREPARED/face_frames" --output "$DEMO_PREPARED/features/mae_340_UTT" \
    --checkpoint "$TINY_ASSETS/weights/mae_face_tiny.pth" --model face_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_maeVideo_embedding.py --input "$DEMO_PREPARED/face_arrays" --output "$DEMO_PREPARED/features/maeV_199_UTT" \
    --checkpoint "$TINY_ASSETS/weights/video_mae_tiny.pth" --model video_mae_tiny --device cpu --num_workers 0
"$PYTHON" extract_audio_embedding.py --input "$DEMO_PREPARED/audio" --output "$DEMO_PREPARED/features/HL-UTT" \
    --model_dir "$TINY_ASSETS/hubert" --device cpu --num_workers 0
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo_prepared.yaml --dataset hcmw_caption

step "4/6 which dumped features detect mind wandering (fold-wise probe) -> $DEMO_DIR/probe"
"$PYTHON" -m minigpt4.probe --cfg-path eval_configs/demo_probe.yaml

step "4/6 (people and time) the probe on the session clips: whole participants held out, context windows, a GRU, timelines, the best set exported -> $DEMO_DIR/probe_sessions"
"$PYTHON" -m minigpt4.probe --cfg-path eval_configs/demo_probe_sessions.yaml

step "4/6 (detector) the exported detector on the demo's session videos: P(MW) timelines -> $DEMO_DIR/detect"
"$PYTHON" -m minigpt4.detect --cfg-path eval_configs/demo_detect.yaml --options detect.overwrite=true

step "4/6 (live) one session written out at real-time pace while the detector follows it: a JSON line per window -> $DEMO_DIR/detect_live"
LIVE="$DEMO_DIR/detect_live"
mkdir -p "$LIVE" && rm -f "$LIVE/camera.mkv"
"$PYTHON" -m minigpt4.detect --cfg-path eval_configs/demo_detect.yaml --follow \
    --options detect.input.path="$LIVE/camera.mkv" detect.output_dir="$LIVE" detect.overwrite=true 2> "$LIVE/detect.log" &
follower=$!
# the camera starts once the detector is ready (it logs that it waits for the recording)
until grep -q "live: waiting for" "$LIVE/detect.log" || ! kill -0 "$follower" 2> /dev/null; do sleep 0.2; done
"$PYTHON" scripts/stream_recording.py "$TINY_ASSETS/sessions/videos/session_0.mp4" "$LIVE/camera.mkv"
wait "$follower"
echo "(the same from standard input: stream_recording.py ... - | python -m minigpt4.detect ... --follow --options detect.input.path=-)"

step "5/6 emotion recognition on the MER-format clips -> $DEMO_DIR/emotion_eval"
echo "(the tiny model's weights are random: accuracy near 0 and garbled answers are expected here;"
echo " with the released Emotion-LLaMA checkpoint the same command gives real predictions)"
"$PYTHON" eval_emotion.py --cfg-path eval_configs/demo_mer.yaml --dataset feature_face_caption,mer2024_caption

step "6/6 k-fold LoRA fine-tuning -> $DEMO_DIR/train"
"$PYTHON" train.py --cfg-path train_configs/demo.yaml --options run.overwrite=true

step "6/6 (MER) instruction tuning on the MER-format clips, validated on held-out clips -> $DEMO_DIR/train_mer"
"$PYTHON" train.py --cfg-path train_configs/demo_mer.yaml --options run.overwrite=true

printf '\ndemo finished: outputs under %s\n' "$DEMO_DIR"
