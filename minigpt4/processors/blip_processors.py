"""BLIP-2 image and caption processors, with the settings Emotion-LLaMA was trained with.

torchvision is imported when a processor is built, not with this module: importing it costs
seconds (it imports torch's compiler), and every command imports the registry.

Images are resized to ``image_size`` x ``image_size`` with bicubic interpolation and
normalised with the EVA-CLIP statistics below.  The eval processor is deterministic, which
is what feature extraction relies on.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
from PIL import Image

from minigpt4.common.registry import registry
from minigpt4.processors.base_processor import BaseProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class _BlipImageProcessor(BaseProcessor):
    """PIL image -> float tensor [3, image_size, image_size], normalised."""

    takes = "image"  # what config validation offers for a dataset's vis_processor

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], resize: torch.nn.Module):
        from torchvision import transforms

        self.image_size = image_size
        self.transform = transforms.Compose(
            [resize, transforms.ToTensor(), transforms.Normalize(mean=tuple(mean), std=tuple(std))]
        )

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"{type(self).__name__} expects a PIL image, got {type(image).__name__}")
        return self.transform(image.convert("RGB"))


@registry.register_processor("blip2_image_eval")
class Blip2ImageEvalProcessor(_BlipImageProcessor):
    """Resize (bicubic) to a square, to tensor, normalise."""

    def __init__(self, image_size: int = 448, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD):
        from torchvision import transforms

        resize = transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC)
        super().__init__(image_size, mean, std, resize)


@registry.register_processor("blip2_image_train")
class Blip2ImageTrainProcessor(_BlipImageProcessor):
    """The eval transform, or with ``augment: true`` a random crop and horizontal flip.

    Augmentation is off by default because the model was fine-tuned on whole peak frames;
    when on, a random crop covering ``min_scale``..``max_scale`` of the image area is resized
    to the square (bicubic) and flipped left-right with probability 0.5.
    """

    def __init__(
        self,
        image_size: int = 448,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        augment: bool = False,
        min_scale: float = 0.5,
        max_scale: float = 1.0,
    ):
        from torchvision import transforms

        bicubic = transforms.InterpolationMode.BICUBIC
        if augment:
            resize = transforms.Compose(
                [
                    transforms.RandomResizedCrop(
                        image_size, scale=(min_scale, max_scale), interpolation=bicubic
                    ),
                    transforms.RandomHorizontalFlip(),
                ]
            )
        else:
            resize = transforms.Resize((image_size, image_size), interpolation=bicubic)
        super().__init__(image_size, mean, std, resize)
        self.augment = augment


# Characters BLIP captions drop (each becomes a space); hyphens and apostrophes survive, so
# "non-mind wandering" stays intact.
_DROPPED_CHARS = re.compile(r'[.!"()*#:;~]')
_SPACE_RUNS = re.compile(r"\s{2,}")


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(BaseProcessor):
    """Normalise a caption: lower-case, drop punctuation, squeeze spaces, cap the word count."""

    takes = "text"

    def __init__(self, prompt: str = "", max_words: int = 50):
        self.prompt = prompt
        self.max_words = max_words

    def __call__(self, caption: str) -> str:
        return self.prompt + self.clean(caption)

    def clean(self, caption: str) -> str:
        caption = _DROPPED_CHARS.sub(" ", caption.lower())
        caption = _SPACE_RUNS.sub(" ", caption)
        caption = caption.rstrip("\n").strip(" ")
        words = caption.split(" ")
        return " ".join(words[: self.max_words])
