from minigpt4.conversation.conversation import CONV_MINIGPT_V2, Conversation, single_turn_prompt

__all__ = ["CONV_MINIGPT_V2", "Conversation", "single_turn_prompt"]
