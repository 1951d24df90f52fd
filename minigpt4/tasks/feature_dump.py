"""The mind-wandering feature dump (SPEC section 7): four arrays per clip, streamed to disk.

Per clip: the FaceMAE and VideoMAE projections (H; with ``model.num_video_streams: 3`` also
the audio projection), the projected image tokens (N x H) and
the LLM's last hidden states at ``model.llama_feature_positions`` (P x H) of the input
``[BOS] + wrapped prompt + answer ""``.  Rows follow ``names.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from minigpt4.common.registry import registry
from minigpt4.features.writer import FeatureWriter
from minigpt4.tasks.base_task import BaseTask

logger = logging.getLogger(__name__)

FEATURE_KINDS = {
    # file stem -> attribute of ClipFeatures
    "facemae_projected_features": "facemae_projected",
    "videomae_projected_features": "videomae_projected",
    "image_projected_features": "image_projected",
    "llama_features": "llama_features",
    "llama_pooled_features": "llama_pooled_features",  # only with model.llama_feature_pools
    "audio_projected_features": "audio_projected",  # only with model.num_video_streams: 3
}


def _weights_used(model_cfg) -> dict:
    keys = ("llama_model", "vit_checkpoint", "ckpt")
    return {key: model_cfg.get(key) or None for key in keys}


@registry.register_task("feature_dump")
class FeatureDumpTask(BaseTask):
    @staticmethod
    def check_before_model(model_cfg, dataset) -> None:
        """The positions resolved against this dataset's instruction from the tokenizer alone:
        one out of range stops the run naming the key before any weights load."""
        registry.get("model", model_cfg.arch).feature_positions_before_loading(model_cfg, dataset.instruction)

    def open_writer(self, model, dataset, out_dir: Path, model_cfg, dataset_cfg) -> tuple[FeatureWriter, list[int]]:
        """Create (or resume) the output folder; returns the writer and this process's rows."""
        instruction = dataset.instruction
        # names resolved against this dataset's instruction: a bad one stops here, before any output
        resolved = model.feature_positions(instruction)
        positions = [p.index for p in resolved]
        layers, pools = list(model.llama_feature_layers), list(model.llama_feature_pools)
        hidden = model.llama_model.config.hidden_size
        row_shapes = {
            "facemae_projected_features": (hidden,),
            "videomae_projected_features": (hidden,),
            "image_projected_features": (model.layout.num_image_tokens, hidden),
            # one layer keeps the (N, P, H) files of earlier dumps
            "llama_features": (len(positions), hidden) if len(layers) == 1 else (len(layers), len(positions), hidden),
        }
        if pools:
            row_shapes["llama_pooled_features"] = (len(layers), len(pools), hidden)
        if model.num_video_streams >= 3:
            row_shapes["audio_projected_features"] = (hidden,)
        manifest = {
            "fingerprint": {
                "model": OmegaConf.to_container(model_cfg, resolve=True),
                "dataset": OmegaConf.to_container(dataset_cfg, resolve=True),
                # weights no checkpoint provides (e.g. the projectors of the demo) are drawn from it
                "seed": self.run_cfg.seed,
            },
            "weights": _weights_used(model_cfg),
            "llama_feature_positions": [{"name": p.name, "index": p.index, "token": p.token} for p in resolved],
            "llama_feature_layers": layers,
            "llama_feature_pools": pools,
            "llama_forward_tokens": model.feature_forward_length(instruction, positions, pools),
            "instruction": instruction,
            "skipped": len({bad.clip for bad in getattr(dataset, "skipped", [])}),  # clips, not problems
        }
        if getattr(dataset, "shard_urls", None):  # read from shards: which of the index's were read
            manifest["shards"] = {"index": dataset.index_url, "read": list(dataset.shard_urls)}
        writer = FeatureWriter(
            out_dir,
            dataset.names,
            row_shapes,
            manifest,
            dtype=self.run_cfg.feature_dtype,
            layout=self.run_cfg.feature_layout,
            overwrite=self.run_cfg.overwrite,
            batch_size=self.run_cfg.batch_size,  # the runner's batches: a resume redoes whole ones
        )
        return writer, writer.open()

    @staticmethod
    def step(model, batch: dict, writer: FeatureWriter) -> None:
        features = model.extract_features(batch)
        arrays = {
            stem: getattr(features, FEATURE_KINDS[stem]).detach().to("cpu", torch.float32).numpy()
            for stem in writer.row_shapes
        }
        writer.write(batch["row"], arrays)

    @staticmethod
    def summary(manifest: dict, out_dir: Path) -> str:
        lines = [f"features in {out_dir}: {manifest['rows']} clips ({manifest['dtype']}, {manifest['layout']})"]
        for stem, entry in manifest["files"].items():
            lines.append(f"  {entry['path']:<40} {tuple(entry['shape'])}")
        positions = ", ".join(f"{p['name']}={p['index']} {p['token']}" for p in manifest["llama_feature_positions"])
        lines.append(f"  llama positions: {positions}")
        lines.append(f"  llama layers: {manifest['llama_feature_layers']}; pools: {manifest['llama_feature_pools'] or 'none'}")
        lines.append(f"  llama forward: the first {manifest['llama_forward_tokens']} tokens of every input")
        if manifest.get("skipped"):
            lines.append(f"  skipped {manifest['skipped']} clips (see skipped.tsv)")
        return "\n".join(lines)

