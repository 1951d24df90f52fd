"""Models and encoders; importing this package registers them."""

from minigpt4.models import eva_vit, face_mae, video_mae  # noqa: F401  (registers encoders)
from minigpt4.models.minigpt_v2 import ClipFeatures, MiniGPTv2

__all__ = ["ClipFeatures", "MiniGPTv2"]
