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
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from stylecap import __version__
from stylecap.core.gap import GapAdapter, build_adapter
from stylecap.core.lms import is_builtin, is_local, load_lm, resolve_lm
from stylecap.errors import ModelError, first_line

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
    extra: dict = field(default_factory=dict)  # task options and provenance (recorded, not interpreted)

    @classmethod
    def from_dict(cls, data: dict) -> "CloseConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


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
    def __init__(self, config: CloseConfig, lm, tokenizer, is_seq2seq: bool, adapter: GapAdapter | None = None):
        super().__init__()
        self.config, self.lm, self.tokenizer, self.is_seq2seq = config, lm, tokenizer, is_seq2seq
        lm_dim = lm.get_input_embeddings().embedding_dim
        self.mapper = PrefixMapper(config.clip_dim, lm_dim, config.prefix_len, config.mapper, config.mapper_hidden)
        self.adapter = adapter or build_adapter(config.adapter, config.clip_dim, config.noise)
        self.batch_builder = BatchBuilder(tokenizer, config, is_seq2seq)

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
        batch = self.batch_builder(input_texts, left_pad=True)
        batch = {k: v.to(device) for k, v in batch.items()}
        embeds = self.embed(clip_vecs.to(device), batch["input_ids"], batch["prefix_mask"])
        gen = dict(self.config.generation)
        num_beams = 1 if do_sample else (num_beams or gen.get("num_beams", 1))
        kwargs = dict(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                      max_new_tokens=max_new_tokens or self.config.max_target_len, num_beams=num_beams,
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


def build_model(config: CloseConfig) -> CloseModel:
    """A fresh model for training: the LM from its name, LoRA applied (unless full fine-tuning)."""
    loaded = load_lm(config.lm)
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


def read_model_meta(model_dir: str | Path) -> dict:
    """The saved model's ``stylecap.json``, checked for format and version."""
    folder = Path(model_dir)
    meta_path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise ModelError("model folder not found", str(folder), "train one with `stylecap train` or `stylecap demo`")
    if not meta_path.is_file():
        raise ModelError(f"not a stylecap model folder: no {CONFIG_FILE}", str(folder),
                         "pass the folder written by `stylecap train` (its model/ subfolder)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"model config is not valid JSON: {exc}", str(meta_path), "retrain or restore it") from exc
    if meta.get("format") != FORMAT or int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise ModelError(f"model folder format {meta.get('format')} v{meta.get('format_version')} is not "
                         f"readable by this stylecap (reads v{FORMAT_VERSION})", str(folder),
                         "upgrade stylecap or retrain the model")
    return meta


def load_model(model_dir: str | Path, device: str | torch.device | None = None) -> CloseModel:
    """Load a saved model folder from its path alone."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = Path(model_dir)
    meta = read_model_meta(folder)
    config = CloseConfig.from_dict(meta["config"])
    missing = [name for name in ("mapper.safetensors", "adapter.safetensors", "tokenizer") if not (folder / name).exists()]
    if not (folder / "lm").exists() and not (folder / "lora").exists():
        missing.append("lm/ or lora/")
    if missing:
        raise ModelError(f"model folder is incomplete, missing {', '.join(missing)}", str(folder),
                         "re-save it: the training run's last checkpoint can be resumed with --resume")
    is_seq2seq = bool(meta["is_seq2seq"])
    model_cls = AutoModelForSeq2SeqLM if is_seq2seq else AutoModelForCausalLM
    base = folder / "lm" if (folder / "lm").exists() else config.lm
    try:
        lm = model_cls.from_pretrained(base)
        if (folder / "lora").exists():
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, folder / "lora")
        tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the model's language model: {first_line(exc, 200)}",
                         str(folder), "check the folder is complete (or that you are online for hub bases)") from exc
    adapter = build_adapter(config.adapter, config.clip_dim, config.noise)
    adapter_state = {k: v for k, v in load_file(str(folder / "adapter.safetensors")).items() if k != "_empty"}
    model = CloseModel(config, lm, tokenizer, is_seq2seq, adapter)
    model.mapper.load_state_dict(load_file(str(folder / "mapper.safetensors")))
    if adapter_state:
        model.adapter.load_state_dict(adapter_state)
    model.eval()
    return model.to(device or "cpu")
