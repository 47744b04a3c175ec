"""The CLOSE model: CLIP vector → gap adapter → prefix mapper → language model (LoRA via peft).

The CLIP vector becomes ``prefix_len`` embeddings that stand in front of the (optional) input text
(question, hypothesis, article). Encoder-decoder LMs (T5) read prefix + input in the encoder and
write the target in the decoder; decoder-only LMs (GPT-2, modern causal LMs) read
prefix + input + target in one sequence and learn only the target.

Token layout, shared by both kinds: the tokenizer output gets ``prefix_len`` placeholder slots
(marked by ``prefix_mask``); after embedding, those slots are overwritten with the mapped CLIP vector.
"""
from __future__ import annotations

import json
import math
import shutil
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from stylecap import __version__
from stylecap.core.gap import GapAdapter, build_adapter
from stylecap.core.hub import model_folder
from stylecap.core.lms import (
    LoadedLM,
    check_lm_folder,
    is_builtin,
    is_local,
    load_lm,
    load_lm_weights,
    load_tokenizer,
    position_limit,
    resolve_lm,
)
from stylecap.core.memory import MEMORY_DIR, TextMemory, load_memory, read_through
from stylecap.core.weights import (
    LOAD_ERRORS,
    PICKLE_SUFFIXES,
    check_safetensors,
    check_state_fits,
    load_error_line,
    read_json_object,
)
from stylecap.errors import ModelError, UsageError
from stylecap.options import ADAPTER_KINDS, MAPPERS, MAX_PREFIX

FORMAT = "stylecap-model"
FORMAT_VERSION = 1
CONFIG_FILE = "stylecap.json"
IGNORE = -100  # label id that the loss skips


@dataclass
class CloseConfig:
    """Everything needed to rebuild a model; written to ``stylecap.json`` in every saved folder."""

    clip: str
    clip_dim: int
    lm: str
    task: str = "caption"
    prefix_len: int = 4
    mapper: str = "linear"  # linear | mlp
    mapper_hidden: int = 0  # mlp width; 0 = the LM width
    adapter: str = "noise"
    noise: float = 0.08
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None  # None: peft's default for the architecture
    max_input_len: int = 64
    max_target_len: int = 32
    generation: dict = field(default_factory=lambda: {"num_beams": 5})
    memory: dict = field(default_factory=dict)  # memory levers at test time (stylecap.core.memory); {}: none
    extra: dict = field(default_factory=dict)  # task options and provenance (recorded, not interpreted)

    @classmethod
    def from_dict(cls, data: dict, where: str = CONFIG_FILE) -> "CloseConfig":
        """The config saved in ``stylecap.json``, every field checked (type, range, known choice), so a
        damaged or hand-edited file is one line naming it, never a traceback deep in model building."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in fields(cls)}
        for f in fields(cls):
            required = f.default is MISSING and f.default_factory is MISSING
            if f.name not in data:
                if required:
                    raise ModelError(f"the model config lacks '{f.name}'", where, RESTORE_FIX)
                continue
            if not _fits_type(data[f.name], hints[f.name]):
                raise ModelError(f"model config field '{f.name}' is {data[f.name]!r}, not {_type_name(hints[f.name])}",
                                 where, RESTORE_FIX)
        config = cls(**{k: v for k, v in data.items() if k in known})
        config.check_values(where)
        return config

    def check_values(self, where: str) -> None:
        """Ranges and choices a model can be built from."""
        whole = {"clip_dim": 1, "prefix_len": 1, "mapper_hidden": 0, "lora_r": 1, "lora_alpha": 1,
                 "max_input_len": 1, "max_target_len": 1}
        problems = [f"'{name}' is {getattr(self, name)}, below {low}" for name, low in whole.items()
                    if getattr(self, name) < low]
        if self.prefix_len > MAX_PREFIX:
            problems.append(f"'prefix_len' is {self.prefix_len}, beyond {MAX_PREFIX}")
        if self.mapper not in MAPPERS:
            problems.append(f"'mapper' is {self.mapper!r}, not one of {', '.join(MAPPERS)}")
        if self.adapter not in ADAPTER_KINDS:
            problems.append(f"'adapter' is {self.adapter!r}, not one of {', '.join(ADAPTER_KINDS)}")
        if self.noise < 0:
            problems.append(f"'noise' is {self.noise}, below 0")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"'lora_dropout' is {self.lora_dropout}, not in [0, 1)")
        if problems:
            raise ModelError(f"model config field {problems[0]}", where, RESTORE_FIX)


RESTORE_FIX = "restore stylecap.json from the training run, or retrain the model"


def _fits_type(value, hint) -> bool:
    """Whether a JSON value fits a field's annotation (bool is not an int here; an int is a float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits_type(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_fits_type(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def _type_name(hint) -> str:
    names = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "an object"}
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join([_type_name(a) for a in args] + ["null"])
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(args[0]).removeprefix('a ')}"
    return names.get(hint, getattr(hint, "__name__", str(hint)))


class PrefixMapper(nn.Module):
    """Maps a CLIP vector to ``prefix_len`` LM input embeddings (linear, or a one-hidden-layer MLP)."""

    def __init__(self, clip_dim: int, lm_dim: int, prefix_len: int, kind: str = "linear", hidden: int = 0):
        super().__init__()
        self.prefix_len, self.lm_dim = prefix_len, lm_dim
        out = prefix_len * lm_dim
        if kind == "linear":
            self.net = nn.Linear(clip_dim, out)
        elif kind == "mlp":
            hidden = hidden or lm_dim
            self.net = nn.Sequential(nn.Linear(clip_dim, hidden), nn.GELU(), nn.Linear(hidden, out))
        else:
            raise ModelError(f"unknown prefix mapper '{kind}'", "--mapper", "choose linear or mlp")

    def forward(self, vecs: torch.Tensor) -> torch.Tensor:
        return self.net(vecs).view(vecs.shape[0], self.prefix_len, self.lm_dim)


class BatchBuilder:
    """Tokenises examples into the model's layout; picklable, so it runs in DataLoader workers."""

    def __init__(self, tokenizer, config: CloseConfig, is_seq2seq: bool):
        self.tokenizer, self.config, self.is_seq2seq = tokenizer, config, is_seq2seq

    def _ids(self, text: str, limit: int) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False, truncation=True, max_length=limit).input_ids
        return ids[: limit - 1] + [self.tokenizer.eos_token_id]

    def __call__(self, input_texts: Sequence[str | None], targets: Sequence[str] | None = None,
                 left_pad: bool = False) -> dict[str, torch.Tensor]:
        n, cfg = self.config.prefix_len, self.config
        inputs = [self._ids(t, cfg.max_input_len) if t else [] for t in input_texts]
        target_ids = [self._ids(t, cfg.max_target_len) for t in targets] if targets is not None else None
        rows, label_rows, prefix_rows = [], [], []
        for i, ids in enumerate(inputs):
            row, labels = [self.tokenizer.pad_token_id] * n + ids, None
            if target_ids is not None and not self.is_seq2seq:  # decoder-only: target follows in-line
                labels = [IGNORE] * len(row) + target_ids[i]
                row = row + target_ids[i]
            rows.append(row)
            prefix_rows.append([True] * n + [False] * (len(row) - n))
            label_rows.append(labels)
        batch = _pad(rows, self.tokenizer.pad_token_id, left_pad)
        batch["prefix_mask"] = _pad(prefix_rows, False, left_pad)["input_ids"].bool()
        if target_ids is not None:
            source = target_ids if self.is_seq2seq else label_rows
            batch["labels"] = _pad(source, IGNORE, left_pad=False)["input_ids"]
        return batch


def _pad(rows: list[list], value, left_pad: bool) -> dict[str, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left_pad else slice(0, len(row))
        ids[i, span] = torch.tensor([int(v) for v in row], dtype=torch.long)
        mask[i, span] = 1
    return {"input_ids": ids, "attention_mask": mask}


class CloseModel(nn.Module):
    def __init__(self, config: CloseConfig, lm, tokenizer, is_seq2seq: bool, adapter: GapAdapter | None = None,
                 memory: TextMemory | None = None):
        super().__init__()
        self.memory = memory  # the training texts' vectors, read through at test time (config.memory)
        self.config, self.lm, self.tokenizer, self.is_seq2seq = config, lm, tokenizer, is_seq2seq
        lm_dim = lm.get_input_embeddings().embedding_dim
        self.mapper = PrefixMapper(config.clip_dim, lm_dim, config.prefix_len, config.mapper, config.mapper_hidden)
        self.adapter = adapter or build_adapter(config.adapter, config.clip_dim, config.noise)
        self.batch_builder = BatchBuilder(tokenizer, config, is_seq2seq)
        self.position_limit = position_limit(lm, tokenizer)

    # ------------------------------------------------------------------ forward / loss
    def embed(self, clip_vecs: torch.Tensor, input_ids: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the mapped (and, in training, adapted) CLIP vector in the prefix slots."""
        vecs = self.adapter(clip_vecs.float())
        embeds = self.lm.get_input_embeddings()(input_ids)
        prefix = self.mapper(vecs).to(embeds.dtype)
        embeds = embeds.clone()
        embeds[prefix_mask] = prefix.reshape(-1, prefix.shape[-1])
        return embeds

    def forward(self, clip_vecs, input_ids, attention_mask, prefix_mask, labels):
        embeds = self.embed(clip_vecs, input_ids, prefix_mask)
        if self.is_seq2seq:
            out = self.lm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)
        else:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
            out = self.lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                          labels=labels)
        return out.loss

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(self, clip_vecs: torch.Tensor, input_texts: Sequence[str | None] | None = None,
                 num_beams: int | None = None, max_new_tokens: int | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float | None = None,
                 num_return_sequences: int = 1) -> list[list[tuple[str, float]]]:
        """Decode text for each CLIP vector: ``num_return_sequences`` (text, score) pairs per vector.

        The score is the mean per-token probability of the text under the model (exp of the mean
        log-probability), comparable across lengths.
        """
        device = next(self.mapper.parameters()).device
        n_rows = clip_vecs.shape[0]
        input_texts = list(input_texts) if input_texts is not None else [None] * n_rows
        clip_vecs, input_texts = read_through(self.memory, self.config.memory, clip_vecs.to(device), input_texts)
        batch = self.batch_builder(input_texts, left_pad=True)
        batch = {k: v.to(device) for k, v in batch.items()}
        embeds = self.embed(clip_vecs.to(device), batch["input_ids"], batch["prefix_mask"])
        gen = dict(self.config.generation)
        num_beams = 1 if do_sample else (num_beams or gen.get("num_beams", 1))
        new_tokens = self.new_token_budget(max_new_tokens or self.config.max_target_len, embeds.shape[1])
        kwargs = dict(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                      max_new_tokens=new_tokens, num_beams=num_beams,
                      do_sample=do_sample, num_return_sequences=max(num_return_sequences, 1),
                      return_dict_in_generate=True, output_scores=True,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        out = self.lm.generate(**kwargs)
        texts = self.tokenizer.batch_decode(out.sequences, skip_special_tokens=True)
        scores = self._sequence_scores(out, num_beams)
        k = max(num_return_sequences, 1)
        return [[(texts[i * k + j].strip(), scores[i * k + j]) for j in range(k)] for i in range(n_rows)]

    def new_token_budget(self, wanted: int, input_width: int) -> int:
        """At most what the LM's position table holds: a decoder-only LM reads its input and what it
        writes in one sequence, an encoder-decoder writes into a decoder of its own."""
        if self.position_limit is None:
            return wanted
        room = self.position_limit - (0 if self.is_seq2seq else input_width)
        if room < 1:
            raise UsageError(f"the input ({input_width} tokens) fills all {self.position_limit} positions of the "
                             "language model", None, "use a shorter question, hypothesis or context")
        return min(wanted, room)

    def _sequence_scores(self, out, num_beams: int) -> list[float]:
        if num_beams > 1 and getattr(out, "sequences_scores", None) is not None:
            return out.sequences_scores.float().exp().tolist()  # length-normalised by the beam search
        steps = self.lm.compute_transition_scores(out.sequences, out.scores, normalize_logits=True).float()
        generated = out.sequences[:, -steps.shape[1]:]
        keep = (generated != self.tokenizer.pad_token_id) & torch.isfinite(steps)
        mean = (steps.masked_fill(~keep, 0).sum(-1) / keep.sum(-1).clamp(min=1))
        return mean.exp().tolist()

    # ------------------------------------------------------------------ parameters
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Only what training changes: the mapper, the adapter's buffers and the LM's trainable weights."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        state = self.state_dict()
        return {k: v.detach().cpu().contiguous() for k, v in state.items()
                if k in names or k.startswith(("mapper.", "adapter."))}

    # ------------------------------------------------------------------ save / load
    def save(self, out_dir: str | Path) -> Path:
        """Write a self-describing folder: config, mapper + adapter (safetensors), tokenizer, LM or LoRA."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        tmp = out.with_name(out.name + ".saving")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "stylecap_version": __version__,
                "is_seq2seq": self.is_seq2seq, "adapter": self.adapter.describe(), "config": asdict(self.config)}
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        save_file({k: v.contiguous() for k, v in self.mapper.state_dict().items()}, str(tmp / "mapper.safetensors"))
        save_file({k: v.contiguous() for k, v in self.adapter.state_dict().items()} or {"_empty": torch.zeros(0)},
                  str(tmp / "adapter.safetensors"))
        self.tokenizer.save_pretrained(tmp / "tokenizer")
        if self.memory is not None:
            self.memory.save(tmp / MEMORY_DIR)
        self._save_lm(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)  # a reader never sees a half-written model folder
        return out

    def _save_lm(self, folder: Path) -> None:
        if self.config.lora:
            self.lm.save_pretrained(folder / "lora")
            if is_builtin(self.config.lm) or is_local(self.config.lm):
                # Small or local bases travel with the model, so the folder loads anywhere.
                shutil.copytree(resolve_lm(self.config.lm), folder / "lm")
        else:
            self.lm.save_pretrained(folder / "lm")


def build_model(config: CloseConfig, loaded: LoadedLM | None = None) -> CloseModel:
    """A fresh model for training: the LM from its name (or as already loaded), LoRA applied (unless
    full fine-tuning)."""
    loaded = loaded or load_lm(config.lm)
    lm = loaded.model
    if config.lora:
        lm = _with_lora(lm, config)
    else:
        lm.requires_grad_(True)
    return CloseModel(config, lm, loaded.tokenizer, loaded.is_seq2seq)


def _with_lora(lm, config: CloseConfig):
    from peft import LoraConfig, get_peft_model

    def lora(targets):
        return get_peft_model(lm, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=targets))

    try:
        return lora(config.lora_targets)
    except ValueError:  # peft knows no default targets for this architecture: adapt every linear layer
        return lora("all-linear")


def fit_lengths(config: CloseConfig, loaded: LoadedLM, target_chosen: bool = False) -> CloseConfig:
    """Token lengths bounded by what the LM can read: the prefix, the input and (for a decoder-only LM)
    the target share its positions. The input is shortened to fit; a target that cannot fit is an
    error when the user chose it (``--max-target-len``), shortened when it is the task's default."""
    limit = position_limit(loaded.model, loaded.tokenizer)
    if limit is None:
        return config
    shared = not loaded.is_seq2seq
    target_room = limit - config.prefix_len - 1 if shared else limit  # keep one input position
    if config.max_target_len > target_room:
        if target_chosen or target_room < 1:
            raise UsageError(f"--max-target-len {config.max_target_len} does not fit language model "
                             f"'{config.lm}': it reads {limit} positions, {config.prefix_len} of them prefix",
                             None, f"use at most {max(target_room, 0)} (or a shorter --prefix-len)")
        config = replace(config, max_target_len=target_room)
    input_room = limit - config.prefix_len - (config.max_target_len if shared else 0)
    if input_room < 1:
        raise UsageError(f"--prefix-len {config.prefix_len} leaves no room in language model '{config.lm}' "
                         f"({limit} positions)", None, "use a shorter --prefix-len")
    return replace(config, max_input_len=min(config.max_input_len, input_room))


def read_model_meta(model_dir: str | Path) -> dict:
    """The saved model's ``stylecap.json``, checked for format and version."""
    folder = model_folder(model_dir)  # a path, or an hf-hub: name fetched into the hub cache
    meta_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ModelError("model folder not found", str(folder), "train one with `stylecap train` or `stylecap demo`")
    if not meta_path.is_file():
        raise ModelError(f"not a stylecap model folder: no {CONFIG_FILE}", str(folder),
                         "pass the folder written by `stylecap train` (its model/ subfolder)")
    meta = read_json_object(meta_path, f"model config ({CONFIG_FILE})")
    version = meta.get("format_version")
    if meta.get("format") != FORMAT:
        raise ModelError(f"not a stylecap model config: its format is {meta.get('format')!r}", str(meta_path),
                         "pass the folder written by `stylecap train` (its model/ subfolder)")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelError(f"the model's format_version is {version!r}, not a whole number", str(meta_path), RESTORE_FIX)
    if version > FORMAT_VERSION:
        raise ModelError(f"model folder format {FORMAT} v{version} is not readable by this stylecap "
                         f"(reads v{FORMAT_VERSION})", str(folder), "upgrade stylecap or retrain the model")
    if not isinstance(meta.get("config"), dict):
        raise ModelError("the model config has no 'config' object", str(meta_path), RESTORE_FIX)
    if not isinstance(meta.get("is_seq2seq"), bool):
        raise ModelError(f"the model config's 'is_seq2seq' is {meta.get('is_seq2seq')!r}, not true or false",
                         str(meta_path), RESTORE_FIX)
    CloseConfig.from_dict(meta["config"], str(meta_path))
    return meta


def load_model(model_dir: str | Path, device: str | torch.device | None = None) -> CloseModel:
    """Load a saved model folder from its path alone, after checking every file it reads."""
    from safetensors.torch import load_file

    folder = model_folder(model_dir)  # a path, or an hf-hub: name fetched into the hub cache
    meta = read_model_meta(folder)
    config = CloseConfig.from_dict(meta["config"], str(folder / CONFIG_FILE))
    _check_model_files(folder)
    is_seq2seq = meta["is_seq2seq"]
    base = folder / "lm" if (folder / "lm").exists() else resolve_lm(config.lm)
    lm, _ = load_lm_weights(base, str(base), is_seq2seq)
    if (folder / "lora").exists():
        lm = _load_lora(lm, folder / "lora")
    tokenizer = load_tokenizer(folder / "tokenizer", str(folder / "tokenizer"))
    adapter = build_adapter(config.adapter, config.clip_dim, config.noise)
    memory = load_memory(folder / MEMORY_DIR) if config.memory else None
    model = CloseModel(config, lm, tokenizer, is_seq2seq, adapter, memory)
    mapper_path, adapter_path = folder / "mapper.safetensors", folder / "adapter.safetensors"
    check_state_fits(model.mapper, load_file(str(mapper_path)), mapper_path)
    adapter_state = {k: v for k, v in load_file(str(adapter_path)).items() if k != "_empty"}
    if adapter_state or model.adapter.state_dict():
        check_state_fits(model.adapter, adapter_state, adapter_path)
    model.eval()
    return model.to(device or "cpu")


def _check_model_files(folder: Path) -> None:
    """Every file a saved model reads is present, intact, safetensors and free of custom code."""
    missing = [name for name in ("mapper.safetensors", "adapter.safetensors", "tokenizer") if not (folder / name).exists()]
    if not (folder / "lm").exists() and not (folder / "lora").exists():
        missing.append("lm/ or lora/")
    if missing:
        raise ModelError(f"model folder is incomplete, missing {', '.join(missing)}", str(folder),
                         "re-save it: the training run's last checkpoint can be resumed with --resume")
    check_safetensors(folder / "mapper.safetensors", "prefix mapper weights")
    check_safetensors(folder / "adapter.safetensors", "gap adapter weights")
    if (folder / "lm").exists():
        check_lm_folder(folder / "lm", "saved language model")
    if (folder / "lora").exists():
        _check_lora_folder(folder / "lora")


def _check_lora_folder(folder: Path) -> None:
    """peft reads adapter_model.safetensors when it exists and a pickle otherwise: require the former."""
    read_json_object(folder / "adapter_config.json", "LoRA settings (adapter_config.json)")
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelError(f"the LoRA adapter's weights are a pickle ({pickles[0]}), which stylecap never loads",
                             str(folder), "convert them to adapter_model.safetensors (save_pretrained in peft)")
    check_safetensors(weights, "LoRA adapter weights file")


def _load_lora(lm, folder: Path):
    """The LoRA adapter on its base, refused when its tensors do not match the base's layers one to one."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors import safe_open

    try:
        model = PeftModel.from_pretrained(lm, folder, use_safetensors=True)
    except LOAD_ERRORS as exc:
        raise ModelError(f"the LoRA adapter does not load on its base model: {load_error_line(exc)}", str(folder),
                         "the adapter belongs to another base model; restore the folder") from exc
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        saved = set(handle.keys())
    expected = set(get_peft_model_state_dict(model))
    if saved != expected:
        odd = sorted(saved - expected) or sorted(expected - saved)
        raise ModelError(f"the LoRA adapter does not fit its base model: {len(saved ^ expected)} tensors unmatched "
                         f"(first: {odd[0]})", str(folder / "adapter_model.safetensors"),
                         "the adapter belongs to another base model; restore the folder")
    return model
