"""Language models: one factory for every way of naming one.

* a model hub name (``t5-base``, ``gpt2``, ``Qwen/Qwen2.5-0.5B``): loaded by transformers (online, or
  from the local hub cache);
* a local folder written by ``save_pretrained``;
* a built-in tiny definition (``tiny-t5``, ``tiny-gpt2``: JSON files in ``stylecap/assets/lms``): built
  once with random weights and a tokenizer trained with ``tokenizers``, saved with ``save_pretrained``
  into the cache, then loaded through exactly the same ``from_pretrained`` call as a hub name.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from stylecap.errors import ModelError, first_line
from stylecap.paths import asset, cache_root, text_digest

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


def builtin_lms() -> dict[str, Path]:
    return {p.stem: p for p in sorted(asset("lms").glob("*.json"))}


def is_builtin(name: str) -> bool:
    return name in builtin_lms()


def is_local(name: str) -> bool:
    return Path(name).is_dir()


@dataclass
class LoadedLM:
    model: object  # a transformers PreTrainedModel
    tokenizer: object  # a transformers PreTrainedTokenizerBase
    is_seq2seq: bool


def resolve_lm(name: str) -> Path | str:
    """The ``from_pretrained`` argument for ``name``: a folder for local/built-in models, else the name."""
    if is_builtin(name):
        return materialise_builtin(name)
    return name


def load_lm(name: str) -> LoadedLM:
    """Load an LM and its tokenizer by hub name, local folder or built-in name."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    source = resolve_lm(name)
    try:
        config = AutoConfig.from_pretrained(source)
        model_cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = model_cls.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        known = ", ".join(builtin_lms())
        raise ModelError(f"could not load language model '{name}': {first_line(exc, 200)}", None,
                         f"use a model hub name (e.g. t5-base, online), a local folder, or a built-in: {known}") from exc
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have no pad token; reuse end-of-text
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedLM(model, tokenizer, bool(config.is_encoder_decoder))


def materialise_builtin(name: str) -> Path:
    """Build a built-in tiny LM into the cache (once) and return its folder."""
    definition_path = builtin_lms()[name]
    definition = json.loads(definition_path.read_text())
    corpus = asset("lms", definition["tokenizer"]["corpus"])
    key = text_digest([definition_path.read_text(), corpus.read_text()])
    folder = cache_root() / "lms" / f"{name}-{key}"
    if (folder / "config.json").exists():
        return folder
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _build_tiny_lm(definition, corpus, tmp)
    try:
        tmp.replace(folder)  # atomic publish; another process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _build_tiny_lm(definition: dict, corpus: Path, out: Path) -> None:
    import torch
    from transformers import CONFIG_MAPPING, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    tokenizer = train_tokenizer(corpus, definition["tokenizer"]["vocab_size"])
    cfg = dict(definition["config"])
    model_type = cfg.pop("model_type")
    special = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
               "bos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.pad_token_id}
    config = CONFIG_MAPPING[model_type](vocab_size=len(tokenizer), **special, **cfg)
    torch.manual_seed(definition.get("seed", 0))
    model_cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = model_cls.from_config(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def train_tokenizer(corpus: Path, vocab_size: int):
    """A byte-level BPE tokenizer trained on ``corpus``: any text encodes, common words are one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS["pad_token"], SPECIAL_TOKENS["eos_token"], SPECIAL_TOKENS["unk_token"]]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(corpus)], trainer)
    eos = SPECIAL_TOKENS["eos_token"]
    # Append end-of-sequence to every encoded text, as T5's tokenizer does.
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, tok.token_to_id(eos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
