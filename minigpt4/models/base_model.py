"""What every model here shares: its default config, device and precision, and how the
LLM (with its tokenizer and LoRA) and the vision encoder are built from config values."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from minigpt4.common.checkpoint_io import is_url
from minigpt4.common.registry import registry
from minigpt4.models.llama_tokenizer import LlamaTokenizer

logger = logging.getLogger(__name__)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_dtype(precision: str, device: torch.device | str | None = None) -> torch.dtype:
    """The weight dtype for ``precision``; CPU always computes in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    on_gpu = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    return PRECISIONS[precision] if on_gpu else torch.float32


class LayerNormFp32(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input dtype (the ViT may run in half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float())


class BaseModel(nn.Module):
    PRETRAINED_MODEL_CONFIG_DICT: dict[str, str] = {}
    DEFAULT_MODEL_TYPE = "pretrain"
    REQUIRED_PATHS: tuple[str, ...] = ()

    @classmethod
    def default_config_path(cls, model_type: str) -> Path:
        return PACKAGE_ROOT / cls.PRETRAINED_MODEL_CONFIG_DICT[model_type]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def maybe_autocast(self, dtype: torch.dtype | None = None):
        """bf16/fp16 autocast on GPU; a no-op on CPU and for fp32, where nothing is cast."""
        dtype = dtype or self.compute_dtype
        if self.device.type != "cuda" or dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        return resolve_dtype(self.precision, self.device)


@contextlib.contextmanager
def quiet_transformers():
    """No per-tensor progress bar while loading, and no FutureWarning that peft (not this
    project) triggers by reading ``is_gradient_checkpointing``; both only clutter run logs."""
    from transformers.utils import logging as hf_logging

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            yield
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def llm_config(llama_model: str):
    """The LLaMA folder's ``config.json`` alone (sizes: no weights, no tokenizer read)."""
    from transformers import AutoConfig

    folder = Path(llama_model).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model.llama_model: no Hugging Face LLaMA folder at {folder} (config.json missing); "
            "point it at your Llama-2-7b-chat-hf download"
        )
    return AutoConfig.from_pretrained(folder)


# A decoder layer's tensors in the LLaMA folder's weight files.
DECODER_LAYER_TENSOR = re.compile(r"^model\.layers\.(\d+)\.")


def _load_first_layers(folder: Path, num_layers: int, kwargs: dict):
    """The causal LM with only its first ``num_layers`` decoder layers (a config override).

    Transformers reads only the tensors the smaller model has a place for; the others' stay
    unread in the files.  Its load report would list each of them in a warning table as
    unexpected; they are left out on purpose, so that report is held back and anything else it
    would have said (a tensor missing from the files, one of a built layer unused) is logged
    here instead.
    """
    from transformers import AutoModelForCausalLM

    hf_logger = logging.getLogger("transformers.modeling_utils")

    def no_load_report(record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()

    hf_logger.addFilter(no_load_report)
    try:
        llm, info = AutoModelForCausalLM.from_pretrained(
            folder, num_hidden_layers=num_layers, output_loading_info=True, **kwargs
        )
    finally:
        hf_logger.removeFilter(no_load_report)

    def left_out(name: str) -> bool:
        match = DECODER_LAYER_TENSOR.match(name)
        return match is not None and int(match[1]) >= num_layers

    unexpected = sorted(name for name in info["unexpected_keys"] if not left_out(name))
    missing = sorted(info["missing_keys"])
    if unexpected or missing:
        logger.warning(
            "model.llama_model: the weight files in %s do not match its config.json: missing %s; not used %s",
            folder, missing or "none", unexpected or "none",
        )
    return llm


def load_llm(
    llama_model: str,
    precision: str,
    pad_token: str,
    low_resource: bool,
    lora_r: int,
    lora_alpha: int,
    lora_dropout: float,
    lora_target_modules: Sequence[str],
    grad_checkpoint: bool,
    num_layers: int | None = None,
):
    """Load the LLaMA folder frozen, with LoRA adapters on top when ``lora_r > 0``.

    ``num_layers`` below the folder's depth builds only the first ``num_layers`` decoder
    layers (embeddings, final norm and LM head stay); the other layers' weights are never read.
    """
    from transformers import AutoModelForCausalLM

    folder = Path(llama_model).expanduser()
    depth = llm_config(llama_model).num_hidden_layers
    tokenizer = LlamaTokenizer.from_folder(folder, pad_token)

    kwargs: dict = {"dtype": resolve_dtype(precision)}
    if low_resource:
        if not torch.cuda.is_available():
            raise RuntimeError("model.low_resource: 8-bit loading needs a CUDA GPU (bitsandbytes); set low_resource: false")
        from transformers import BitsAndBytesConfig

        kwargs.update(quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map={"": torch.cuda.current_device()})
    with quiet_transformers():
        if num_layers is None or num_layers >= depth:
            llm = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
        else:
            llm = _load_first_layers(folder, num_layers, kwargs)
    if len(tokenizer) > llm.config.vocab_size:
        raise ValueError(
            f"model.llama_model: the tokenizer in {folder} has {len(tokenizer)} pieces but the LLM only "
            f"{llm.config.vocab_size} embeddings"
        )
    llm.requires_grad_(False)
    if grad_checkpoint:
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if lora_r > 0:
        from peft import LoraConfig, get_peft_model

        if low_resource:
            from peft import prepare_model_for_kbit_training

            llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=grad_checkpoint)
        config = LoraConfig(
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules=list(lora_target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        )
        with quiet_transformers():
            llm = get_peft_model(llm, config)
    return llm, tokenizer


def vision_encoder_architecture(name: str, image_size: int) -> nn.Module:
    """The registered image encoder ``name`` on the meta device: its sizes (patch grid, width)
    without memory or weights."""
    with torch.device("meta"):
        return registry.get("encoder", name)(img_size=image_size)


def load_vision_encoder(
    name: str,
    image_size: int,
    drop_path_rate: float,
    use_grad_checkpoint: bool,
    checkpoint: str | None,
    trust_checkpoint: bool,
    precision: str,
    freeze: bool,
):
    """Build a registered image encoder and its fp32 LayerNorm; frozen ones run in ``precision``."""
    factory = registry.get("encoder", name)
    if not checkpoint:
        logger.warning("model.vit_checkpoint is empty: the vision encoder %s keeps random weights", name)
    elif not is_url(checkpoint) and not Path(checkpoint).expanduser().is_file():
        raise FileNotFoundError(f"model.vit_checkpoint: file not found: {checkpoint}")
    encoder = factory(
        img_size=image_size,
        drop_path_rate=drop_path_rate,
        use_grad_checkpoint=use_grad_checkpoint,
        checkpoint=checkpoint or None,
        trust_checkpoint=trust_checkpoint,
    )
    ln_vision = LayerNormFp32(encoder.num_features)
    if freeze:
        encoder.requires_grad_(False).eval()
        ln_vision.requires_grad_(False)
        encoder.to(resolve_dtype(precision))
    return encoder, ln_vision
