"""What stylecap agrees to read from a model folder: safetensors weights and JSON settings, never a
pickle and never a model's own Python code.

Every loader (CLIP, language model, LoRA adapter, saved model) runs these checks on its files before
a library sees them, so a pickle, a custom-code model or a damaged file is one line naming the file
instead of a prompt, a traceback or silently random weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError

from stylecap.errors import ModelError

# What a damaged or foreign model file makes the loading libraries (transformers, peft, open_clip,
# safetensors) raise; anything else is a bug of ours and keeps its traceback.
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError, SafetensorError)

# torch.save / pickle formats: loading one can run code, so none is ever opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Settings files in which transformers looks for a model's own Python code (``auto_map``).
CODE_SETTINGS = ("config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
NO_CODE_FIX = "use a model whose architecture transformers ships; stylecap never runs a model folder's own code"


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold an object, as a one-line error naming it when it does not."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read the {what}: {exc.__class__.__name__}", str(path), "restore the file") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"the {what} is not valid JSON ({exc.msg} at line {exc.lineno})", str(path),
                         "restore the file or re-save the model") from exc
    if not isinstance(data, dict):
        raise ModelError(f"the {what} holds a JSON {type(data).__name__}, not an object", str(path),
                         "restore the file or re-save the model")
    return data


def refuse_custom_code(folder: Path) -> None:
    """Refuse a model folder whose settings name Python code of its own (transformers' ``auto_map``)."""
    for name in CODE_SETTINGS:
        path = Path(folder) / name
        if path.is_file() and "auto_map" in read_json_object(path, f"model setting {name}"):
            raise ModelError("custom-code models are refused: this folder names Python code of its own (auto_map)",
                             str(path), NO_CODE_FIX)


def check_safetensors(path: Path, what: str = "weights file") -> None:
    """A safetensors file whose header parses and whose tensors lie wholly inside the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"missing {what}", str(path), "restore it or re-save the model")
    if path.stat().st_size == 0:
        raise ModelError(f"empty {what} (0 bytes)", str(path), "restore it or re-save the model")
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except LOAD_ERRORS as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"damaged or truncated {what} ({reason})", str(path),
                         "restore it or re-save the model") from exc


def check_weights_folder(folder: Path, what: str) -> None:
    """A folder's weights must be safetensors, every one intact; a folder holding only pickles is refused."""
    folder = Path(folder)
    tensors = sorted(folder.glob("*.safetensors"))
    if not tensors:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise ModelError(f"the {what} weights are a pickle ({pickles[0]}), which stylecap never loads",
                             str(folder), "convert them to safetensors (save_pretrained(..., safe_serialization=True))")
        raise ModelError(f"no weights (*.safetensors) in the {what} folder", str(folder),
                         "restore the folder or re-save the model")
    for path in tensors:
        check_safetensors(path, f"{what} weights file")


def refuse_pickle_file(path: str | Path, what: str) -> None:
    """A single weights file named by the user must be safetensors."""
    if Path(path).suffix != ".safetensors":
        raise ModelError(f"the {what} is not a safetensors file, and stylecap never loads a pickle", str(path),
                         "convert it to safetensors (safetensors.torch.save_file(state_dict, 'x.safetensors'))")


def check_state_fits(module, state: dict, path: Path) -> None:
    """Load ``state`` into ``module`` only when every name and shape matches, else one line saying how not."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if wrong:
        key = wrong[0]
        raise ModelError(f"{Path(path).name} does not fit this model: {key} is {_shape(state[key])} in the file, the model "
                         f"needs {_shape(expected[key])}", str(path), "the file belongs to another model; restore the folder")
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise ModelError(f"{Path(path).name} does not fit this model ({len(missing)} missing, {len(unexpected)} unexpected "
                         f"tensors; {detail})", str(path), "the file belongs to another model; restore the folder")
    module.load_state_dict(state)


def _shape(tensor) -> str:
    return "×".join(str(n) for n in tensor.shape) or "a scalar"


def state_dict_mismatch(exc: BaseException) -> str | None:
    """The reason torch gives for weights that do not fit a model (a size mismatch, a missing key):
    its ``Error(s) in loading state_dict`` message says nothing on its first line and the reason on
    the next. None for any other error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Error(s) in loading state_dict"):
        return (lines[1] if len(lines) > 1 else "unmatched tensors")[:250]
    return None


def load_error_line(exc: BaseException) -> str:
    """The informative line of a library's load error."""
    mismatch = state_dict_mismatch(exc)
    if mismatch:
        return f"the weights do not fit the model: {mismatch}"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def needs_custom_code(exc: BaseException) -> bool:
    """Whether transformers refused to load a model because it needs code of its own."""
    text = str(exc)
    return "custom code" in text or "trust_remote_code" in text


def refuse_hub_custom_code(ref: str, part: str = "config") -> None:
    """A transformers model or tokenizer named by a folder or a hub name, refused when it needs code of
    its own. Other failures (offline, no such model) are left to the loader that needs the files."""
    if Path(ref).is_dir():
        refuse_custom_code(Path(ref))
        return
    from transformers import AutoConfig, AutoTokenizer

    loader = AutoTokenizer if part == "tokenizer" else AutoConfig
    try:
        loader.from_pretrained(ref, trust_remote_code=False)
    except LOAD_ERRORS as exc:
        if needs_custom_code(exc):
            raise ModelError(f"custom-code models are refused: '{ref}' needs Python code of its own", None,
                             NO_CODE_FIX) from None
