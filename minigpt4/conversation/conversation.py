"""Conversation templates for chatting with the model (MiniGPT-v2's LLaMA-2 chat format).

Training and feature extraction wrap a single instruction with ``model.prompt_template``;
this module serves interactive use and the upstream ("legacy") generation layout, whose
prompt is ``<s>[INST] {instruction} [/INST]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Conversation:
    """A turn-based prompt: ``system`` then, per message, its role prefix and text."""

    system: str
    roles: tuple[str, str]
    messages: list[list[str | None]] = field(default_factory=list)
    sep: str = ""

    def append_message(self, role: str, message: str | None) -> None:
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        prompt = self.system + self.sep
        for role, message in self.messages:
            prompt += role + (message + self.sep if message else "")
        return prompt

    def copy(self) -> "Conversation":
        return Conversation(self.system, self.roles, [list(m) for m in self.messages], self.sep)


# MiniGPT-v2 / Emotion-LLaMA chat format: "<s>[INST] {user} [/INST]{assistant}".
CONV_MINIGPT_V2 = Conversation(system="", roles=("<s>[INST] ", " [/INST]"), sep="")


def single_turn_prompt(instruction: str, template: Conversation = CONV_MINIGPT_V2) -> str:
    """The prompt text of a one-question conversation awaiting the assistant's answer."""
    conv = template.copy()
    conv.append_message(conv.roles[0], instruction)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
