"""The LLaMA tokenizer as the released model was trained with it: plain SentencePiece.

Upstream tokenized every prompt piece with the slow ``LlamaTokenizer``, which is
``SentencePieceProcessor.encode`` on each piece.  Current transformers tokenizers differ
from that on pieces that begin with a space, so this project reads ``tokenizer.model``
directly and is exact by construction.

The folder's ``tokenizer_config.json`` may set ``legacy`` (true when absent, as the
transformers versions upstream pinned behaved).  It matters only for text right after a
special token written in the text (``<s>[INST] ...``): legacy encodes it like any text, with
the dummy-prefix "▁" (``▁[``); non-legacy without it (``[``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import sentencepiece as spm

TOKENIZER_CONFIG = "tokenizer_config.json"


def read_legacy_flag(folder: str | Path) -> bool:
    """``legacy`` of the folder's tokenizer_config.json; true when the file or the key is absent."""
    path = Path(folder) / TOKENIZER_CONFIG
    if not path.is_file():
        return True
    try:
        legacy = json.loads(path.read_text(encoding="utf-8")).get("legacy")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"model.llama_model: {path} is not a JSON object: {exc}") from exc
    if legacy is None:  # transformers reads a missing or null flag as legacy
        return True
    if not isinstance(legacy, bool):
        raise ValueError(f"model.llama_model: {path}: 'legacy' must be true or false, got {legacy!r}")
    return legacy


def _without_dummy_prefix(model_file: str | Path) -> spm.SentencePieceProcessor:
    """The same model with the dummy prefix off, as transformers loads it for non-legacy use."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    proto.normalizer_spec.add_dummy_prefix = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


class LlamaTokenizer:
    def __init__(self, model_file: str | Path, pad_token: str = "$$", legacy: bool = True):
        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.legacy = legacy
        self._sp_after_special = self.sp if legacy else _without_dummy_prefix(model_file)
        self.unk_token_id = self.sp.unk_id()
        self.bos_token_id = self.sp.bos_id()
        self.eos_token_id = self.sp.eos_id()
        self.eos_token = self.sp.id_to_piece(self.eos_token_id)
        self.pad_token = pad_token
        self.pad_token_id = self.sp.piece_to_id(pad_token)
        if self.pad_token_id == self.unk_token_id:
            raise ValueError(f"model.pad_token: {pad_token!r} is not a piece of the tokenizer {model_file}")
        self._special = {self.bos_token_id, self.eos_token_id, self.unk_token_id, self.pad_token_id}
        bos, eos = self.sp.id_to_piece(self.bos_token_id), self.eos_token
        self._special_in_text = {bos: self.bos_token_id, eos: self.eos_token_id}
        self._special_pattern = re.compile("(" + "|".join(map(re.escape, self._special_in_text)) + ")")

    @classmethod
    def from_folder(cls, folder: str | Path, pad_token: str = "$$") -> "LlamaTokenizer":
        model_file = Path(folder) / "tokenizer.model"
        if not model_file.is_file():
            raise FileNotFoundError(f"model.llama_model: {folder} has no tokenizer.model (the LLaMA SentencePiece model)")
        return cls(model_file, pad_token, legacy=read_legacy_flag(folder))

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS (SentencePiece adds its dummy-prefix space)."""
        return self.sp.encode(text) if text else []

    def encode_with_special_tokens(self, text: str) -> list[int]:
        """Ids of ``text`` where a written ``<s>`` / ``</s>`` is the BOS / EOS id, as the slow
        LLaMA tokenizer reads it; the text after each special token follows ``legacy``."""
        chunks = self._special_pattern.split(text)  # text, special, text, special, ..., text
        ids = self.encode(chunks[0])
        for special, chunk in zip(chunks[1::2], chunks[2::2]):
            ids.append(self._special_in_text[special])
            ids += self._sp_after_special.encode(chunk) if chunk else []
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with BOS, EOS, UNK and padding left out."""
        return self.sp.decode([i for i in ids if i not in self._special])

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)
