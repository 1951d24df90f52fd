import numpy as np
import pytest
import torch
from PIL import Image

import minigpt4.processors  # noqa: F401  (registers the processors)
from minigpt4.common.registry import registry
from minigpt4.processors.blip_processors import (
    CLIP_MEAN,
    CLIP_STD,
    Blip2ImageEvalProcessor,
    Blip2ImageTrainProcessor,
    BlipCaptionProcessor,
)


def _image(width=5, height=4, mode="RGB"):
    pixels = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _by_hand(image, size, mean=CLIP_MEAN, std=CLIP_STD):
    resized = np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
    normalised = (resized - np.array(mean)) / np.array(std)  # [H, W, C]
    return normalised.transpose(2, 0, 1)


@pytest.mark.parametrize("size", [3, 7])
def test_eval_processor_matches_hand_computation(size):
    image = _image()
    cfg = {"name": "blip2_image_eval", "image_size": size}
    processor = registry.get("processor", "blip2_image_eval").from_config(cfg)
    out = processor(image)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _by_hand(image, size), rtol=0, atol=1e-5)


def test_eval_processor_defaults_and_custom_stats():
    assert Blip2ImageEvalProcessor.from_config(None)(_image()).shape == (3, 448, 448)
    processor = Blip2ImageEvalProcessor.from_config({"image_size": 4, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]})
    expected = _by_hand(_image(), 4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    np.testing.assert_allclose(processor(_image()).numpy(), expected, rtol=0, atol=1e-5)


def test_non_rgb_images_are_converted():
    grey = _image(mode="L")
    processor = Blip2ImageEvalProcessor(image_size=3)
    np.testing.assert_allclose(processor(grey).numpy(), _by_hand(grey, 3), rtol=0, atol=1e-5)


def test_image_processor_rejects_non_images():
    with pytest.raises(TypeError, match="PIL image"):
        Blip2ImageEvalProcessor(image_size=3)(np.zeros((3, 3, 3)))


def test_train_processor_without_augmentation_equals_eval():
    image = _image()
    train = registry.get("processor", "blip2_image_train").from_config({"image_size": 6})
    assert train.augment is False
    assert torch.equal(train(image), Blip2ImageEvalProcessor(image_size=6)(image))


def test_train_processor_with_augmentation_keeps_shape():
    torch.manual_seed(0)
    train = Blip2ImageTrainProcessor.from_config({"image_size": 6, "augment": True, "min_scale": 0.3})
    assert train(_image(16, 12)).shape == (3, 6, 6)


def test_unknown_config_key_is_rejected():
    with pytest.raises(ValueError, match="img_size.*known keys: image_size"):
        Blip2ImageEvalProcessor.from_config({"img_size": 224})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Mind Wandering", "mind wandering"),
        ("non-mind wandering", "non-mind wandering"),
        ('  A "quoted" (thing)!  ', "a quoted thing"),
        ("one.two!three:four;five~six*seven#eight", "one two three four five six seven eight"),
        ("ends with newline.\n", "ends with newline"),
        ("many     spaces   here", "many spaces here"),
    ],
)
def test_caption_cleaning(raw, expected):
    assert BlipCaptionProcessor()(raw) == expected


def test_caption_prompt_and_word_cap():
    processor = registry.get("processor", "blip_caption").from_config({"prompt": "a photo of ", "max_words": 3})
    assert processor("One two three four five") == "a photo of one two three"
    assert BlipCaptionProcessor.from_config({})(" ".join(["w"] * 60)) == " ".join(["w"] * 50)
