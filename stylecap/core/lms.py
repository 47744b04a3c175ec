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

from stylecap.core.weights import (
    LOAD_ERRORS,
    NO_CODE_FIX,
    check_weights_folder,
    load_error_line,
    needs_custom_code,
    refuse_custom_code,
)
from stylecap.errors import ModelError
from stylecap.paths import asset, cache_root, text_digest

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
# Passed to every transformers loader: a model's own Python never runs, and nothing asks on stdin.
NO_CUSTOM_CODE = {"trust_remote_code": False}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt",
                   "sentencepiece.bpe.model")
POSITION_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")
SAMPLE_SENTENCE = "a small red circle left of a large blue square"


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
    """Load an LM and its tokenizer by hub name, local folder or built-in name.

    Custom-code models, pickled weights, weights that do not fit their config and tokenizers that
    cannot encode text are refused here, before any training or captioning starts.
    """
    source = resolve_lm(name)
    if is_local(str(source)):
        check_lm_folder(Path(source))
    model, is_seq2seq = load_lm_weights(source, name)
    tokenizer = load_tokenizer(source, name)
    return LoadedLM(model, tokenizer, is_seq2seq)


def check_lm_folder(folder: Path, what: str = "language model") -> None:
    """A local LM folder: a config, no custom code, safetensors weights only, every file intact."""
    if not (folder / "config.json").is_file():
        raise ModelError(f"no config.json in the {what} folder", str(folder),
                         "pass a folder written by save_pretrained, a hub name, or a built-in")
    refuse_custom_code(folder)
    check_weights_folder(folder, what)


def load_lm_weights(source: Path | str, label: str, is_seq2seq: bool | None = None):
    """(model, is_seq2seq) from a folder or hub name: safetensors only, no custom code, every weight present."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(source, **NO_CUSTOM_CODE)
        if getattr(config, "auto_map", None):  # a hub model that ships code: its built-in twin may differ
            raise ModelError(f"custom-code models are refused: language model '{label}' names Python code of "
                             "its own (auto_map)", None, NO_CODE_FIX)
        seq2seq = bool(config.is_encoder_decoder) if is_seq2seq is None else is_seq2seq
        model_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model, info = model_cls.from_pretrained(source, config=config, use_safetensors=True,
                                                output_loading_info=True, **NO_CUSTOM_CODE)
    except LOAD_ERRORS as exc:
        raise _lm_error(label, exc) from exc
    absent = sorted(info.get("missing_keys", ())) + sorted(info.get("mismatched_keys", ()))
    if absent:  # transformers would fill them with random values and carry on
        raise ModelError(f"the weights of language model '{label}' do not fit its config.json: {len(absent)} "
                         f"tensors missing or of the wrong shape (first: {absent[0]})", str(source),
                         "the weights belong to another architecture; restore the folder")
    return model, seq2seq


def load_tokenizer(source: Path | str, label: str):
    """A tokenizer that can encode text: refused when it has no files, no vocabulary, or encodes to nothing."""
    from transformers import AutoTokenizer

    if is_local(str(source)):
        refuse_custom_code(Path(source))
        if not any((Path(source) / name).is_file() for name in TOKENIZER_FILES):
            raise ModelError(f"no tokenizer files in the folder of '{label}' (looked for {', '.join(TOKENIZER_FILES)})",
                             str(source), "copy the tokenizer the model was trained with into that folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **NO_CUSTOM_CODE)
    except LOAD_ERRORS as exc:
        raise _lm_error(label, exc, "tokenizer") from exc
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have no pad token; reuse end-of-text
        tokenizer.pad_token = tokenizer.eos_token
    check_tokenizer(tokenizer, str(source))
    return tokenizer


def check_tokenizer(tokenizer, where: str) -> None:
    """Refuse a tokenizer that would turn every target into an empty token list (a model that then
    trains on nothing, prints a loss and captions ``""``)."""
    fix = "use the tokenizer the model was trained with (tokenizer.json or the vocabulary files)"
    if len(tokenizer) == 0:
        raise ModelError("the tokenizer has an empty vocabulary", where, fix)
    if tokenizer.eos_token_id is None:
        raise ModelError("the tokenizer has no end-of-sequence token", where, "set eos_token in tokenizer_config.json")
    ids = tokenizer(SAMPLE_SENTENCE, add_special_tokens=False).input_ids
    special = set(tokenizer.all_special_ids)
    decoded = tokenizer.decode([i for i in ids if i not in special], skip_special_tokens=True)
    if not any(ch.isalnum() for ch in decoded):
        raise ModelError(f"the tokenizer encodes a sample sentence to nothing ({len(ids)} tokens, none of them text)",
                         where, fix)


def position_limit(model, tokenizer) -> int | None:
    """The most token positions the LM can read (its position table), else the tokenizer's stated
    maximum; None when neither bounds it (relative positions, as in T5)."""
    config = getattr(model, "config", None)
    for name in POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    stated = getattr(tokenizer, "model_max_length", None)
    return stated if isinstance(stated, int) and 0 < stated < 1_000_000 else None  # huge = "no limit"


def _lm_error(label: str, exc: BaseException, part: str = "language model") -> ModelError:
    line = load_error_line(exc)
    if needs_custom_code(exc):
        return ModelError(f"custom-code models are refused: {part} '{label}' needs Python code of its own", None,
                          NO_CODE_FIX)
    known = ", ".join(builtin_lms())
    return ModelError(f"could not load {part} '{label}': {line[:200]}", None,
                      f"use a model hub name with safetensors weights (e.g. t5-base, online), a local folder, "
                      f"or a built-in: {known}")


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
