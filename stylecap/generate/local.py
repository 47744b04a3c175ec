"""The local provider: a transformers model generating in this process, for people with a GPU and
no server (`--provider local --model FOLDER`).

It answers the very prompts the OpenAI provider sends, through the same `complete` call, so sources,
filters, the corpus store and resumption are shared. The source's workers each hand in one prompt;
prompts that arrive while a batch is generating form the next batch, so the model always works on
as many prompts as are waiting (up to `--concurrency`). Models load with `trust_remote_code=False`
and safetensors only: a downloaded folder runs none of its own code and unpickles nothing.
"""
from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from stylecap.errors import ModelError, UsageError
from stylecap.generate.llm import LIST_PRICES, ItemFailed, LLMSettings
from stylecap.generate.progress import Tally

MODEL_HELP = ("pass --model a transformers folder (config.json, *.safetensors, tokenizer files), "
              "a model hub name, or a built-in tiny LM (tiny-gpt2, tiny-t5)")


def check_local_model(name: str) -> None:
    """Fail before anything loads when `--model` cannot name a local model."""
    if name in LIST_PRICES:  # the OpenAI default (or another OpenAI model) was left in place
        raise UsageError(f"--provider local runs a transformers model here, not {name!r}", fix=MODEL_HELP)
    if _looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise ModelError("model folder not found", name, MODEL_HELP)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or Path(name).expanduser().exists()


class LocalLM:
    """`complete(prompt)` answered by a local model, prompts batched together."""

    def __init__(self, settings: LLMSettings, tally: Tally):
        self.settings, self.tally = settings, tally
        self.batch_size = settings.concurrency
        self.model = _load(settings.model)
        self.batches = 0  # generate() calls so far: fewer than prompts when batching works
        self._waiting: list[tuple[str, int, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None

    async def complete(self, prompt: str, sample: int = 0) -> str:
        """The model's reply to `prompt`; `sample` varies the sampling seed, as it does on a server."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((prompt, sample, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_batches())
        reply = await future
        if not reply.strip():
            raise ItemFailed("empty reply")
        return reply

    async def _run_batches(self) -> None:
        while self._waiting:
            await asyncio.sleep(0)  # let every worker that is ready hand in its prompt first
            batch, self._waiting = self._waiting[:self.batch_size], self._waiting[self.batch_size:]
            self.tally.requests += len(batch)
            try:
                replies, tokens_in, tokens_out = await asyncio.to_thread(
                    self.model.generate, [(prompt, sample) for prompt, sample, _ in batch], self.settings)
            except Exception as exc:  # noqa: BLE001 - handed to every caller waiting on this batch
                outcomes = [exc] * len(batch)
            else:
                self.batches += 1
                self.tally.tokens_in += tokens_in
                self.tally.tokens_out += tokens_out
                outcomes = replies
            for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its worker was cancelled meanwhile
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def aclose(self) -> None:
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)


class _Model:
    """A loaded model and tokenizer, and how to turn prompts into replies with them."""

    def __init__(self, model, tokenizer, seq2seq: bool, device):
        self.model, self.tokenizer, self.seq2seq, self.device = model, tokenizer, seq2seq, device
        # A chat model is asked through its own template; a base model gets the prompt as it is
        # and continues it (the templates end on an answer label such as "Uplifting:").
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.max_positions = _max_positions(model.config)

    def prompt_text(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def generate(self, requests: list[tuple[str, int]], settings: LLMSettings) -> tuple[list[str], int, int]:
        """(replies, prompt tokens, reply tokens) for one batch of (prompt, sample number)."""
        import torch

        prompts = [prompt for prompt, _ in requests]
        # Sampling is seeded by what is asked, so the same batch gets the same replies in a rerun.
        torch.manual_seed(_seed_of(requests))
        encoded = self._encode([self.prompt_text(p) for p in prompts], settings.max_tokens).to(self.device)
        sampling = {"do_sample": True, "temperature": settings.temperature} if settings.temperature > 0 \
            else {"do_sample": False}
        try:
            with torch.inference_mode():
                output = self.model.generate(**encoded, max_new_tokens=settings.max_tokens,
                                             pad_token_id=self.tokenizer.pad_token_id, **sampling)
        except torch.cuda.OutOfMemoryError:
            raise ModelError(f"out of GPU memory generating {len(prompts)} prompts at once", settings.model,
                             "lower --concurrency (prompts per batch) or --max-tokens") from None
        new = output if self.seq2seq else output[:, encoded["input_ids"].shape[1]:]
        replies = [self._answer(text) for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        reply_tokens = int((new != self.tokenizer.pad_token_id).sum())
        return replies, int(encoded["attention_mask"].sum()), reply_tokens

    def _encode(self, texts: list[str], max_new_tokens: int):
        # A prompt longer than the model can read loses its start, not its end: the end holds the
        # seed caption and the answer label the reply must follow.
        limit = None
        if self.max_positions:
            limit = self.max_positions - (0 if self.seq2seq else max_new_tokens)
            if limit < 8:
                raise ModelError(f"the model reads at most {self.max_positions} tokens, too few for a prompt "
                                 f"and a {max_new_tokens}-token reply", None, "lower --max-tokens")
        # A chat template already holds the special tokens the model expects.
        return self.tokenizer(texts, return_tensors="pt", padding=True, truncation=limit is not None,
                              max_length=limit, add_special_tokens=not self.chat)

    def _answer(self, text: str) -> str:
        if self.chat:
            return text.strip()
        # A base model answers on the label's line, then goes on to write the next example.
        lines = text.strip().splitlines()
        return lines[0].strip() if lines else ""


def _seed_of(requests: list[tuple[str, int]]) -> int:
    digest = hashlib.blake2b("\0".join(f"{sample}\0{prompt}" for prompt, sample in requests).encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch takes seeds below 2**63


def _max_positions(config) -> int | None:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _load(name: str) -> _Model:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from stylecap.core.lms import is_builtin, materialise_builtin

    if is_builtin(name):
        source = materialise_builtin(name)
    elif _looks_like_path(name):
        source = str(Path(name).expanduser())
    else:
        source = name  # a model hub name: the local hub cache, or a download when online
    device = _device(torch)
    safe = {"trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(source, **safe)
        seq2seq = bool(config.is_encoder_decoder)
        model_class = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
        model = model_class.from_pretrained(source, use_safetensors=True, **_dtype_argument(torch, device), **safe)
        tokenizer = AutoTokenizer.from_pretrained(source, **safe)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not load the local model: {str(exc).splitlines()[0][:200]}", name,
                         MODEL_HELP) from None
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none; padding reuses end-of-text
        tokenizer.pad_token = tokenizer.eos_token
    if not seq2seq:
        tokenizer.padding_side = "left"  # a causal model continues the last token of each row
    tokenizer.truncation_side = "left"
    return _Model(model.to(device).eval(), tokenizer, seq2seq, device)


def _device(torch) -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _dtype_argument(torch, device: str) -> dict:
    """Half precision where the hardware runs it well (bf16 on recent GPUs), else float32. The
    argument was renamed from `torch_dtype` to `dtype` in transformers 4.56."""
    import transformers
    from packaging.version import Version

    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    name = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {name: dtype}
