"""The LLaMA tokenizer as the released model was trained with it: plain SentencePiece.

Upstream tokenized every prompt piece with the slow (legacy) ``LlamaTokenizer``, which is
``SentencePieceProcessor.encode`` on each piece.  Current transformers tokenizers differ
from that on pieces that begin with a space and depend on the folder's ``legacy`` flag, so
this project reads ``tokenizer.model`` directly and is exact by construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import sentencepiece as spm


class LlamaTokenizer:
    def __init__(self, model_file: str | Path, pad_token: str = "$$"):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.unk_token_id = self.sp.unk_id()
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        self.eos_token = self.sp.id_to_piece(self.eos_token_id)
        self.pad_token = pad_token
        self.pad_token_id = self.sp.piece_to_id(pad_token)
        if self.pad_token_id == self.unk_token_id:
            raise ValueError(f"model.pad_token: {pad_token!r} is not a piece of the tokenizer {model_file}")
        self._special = {self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id}

    @classmethod
    def from_folder(cls, folder: str | Path, pad_token: str = "$$") -> "LlamaTokenizer":
        model_file = Path(folder) / "tokenizer.model"
        if not model_file.is_file():
            raise FileNotFoundError(f"model.llama_model: {folder} has no tokenizer.model (the LLaMA SentencePiece model)")
        return cls(model_file, pad_token)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS (SentencePiece adds its dummy-prefix space)."""
        return self.sp.encode(text) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with BOS, EOS, UNK and padding left out."""
        return self.sp.decode([i for i in ids if i not in self._special])

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)
