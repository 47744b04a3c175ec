"""Saved models on the Hugging Face hub: ``hf-hub:ORG/NAME[@REVISION]`` names a model folder uploaded
with ``huggingface-cli upload``; it is fetched with ``huggingface_hub.snapshot_download`` into the
hub's own cache (``HF_HUB_CACHE``) and loaded from there like any folder. With ``HF_HUB_OFFLINE=1``
the cached snapshot is used and nothing is downloaded.
"""
from __future__ import annotations

import re
from pathlib import Path

from stylecap.errors import ModelError, first_line

PREFIX = "hf-hub:"
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_ref(ref: str | Path | None) -> bool:
    return ref is not None and str(ref).startswith(PREFIX)


def split_ref(ref: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME@REV`` → (``ORG/NAME``, ``REV``), checked before anything is fetched."""
    repo, _, revision = str(ref)[len(PREFIX):].partition("@")
    if not _REPO.match(repo):
        raise ModelError(f"bad hub model name '{ref}'", "--model", "write it as hf-hub:ORG/NAME (or hf-hub:ORG/NAME@REVISION)")
    return repo, revision or None


def model_folder(ref: str | Path) -> Path:
    """The local folder of a model: the path itself, or the hub snapshot of an ``hf-hub:`` name."""
    if not is_hub_ref(ref):
        return Path(ref)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo, revision = split_ref(str(ref))
    try:
        return Path(snapshot_download(repo, revision=revision))
    except LocalEntryNotFoundError as exc:
        raise ModelError(f"hub model {repo} is not in the local hub cache and cannot be downloaded now "
                         f"({first_line(exc, 120)})", str(ref),
                         "go online (unset HF_HUB_OFFLINE) or download it once with `huggingface-cli download`") from None
    except RepositoryNotFoundError:
        raise ModelError(f"no hub model {repo} (or it is private)", str(ref),
                         "check the name; for a private model log in with `huggingface-cli login`") from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"could not fetch hub model {repo}: {first_line(exc, 200)}", str(ref),
                         "check the connection and try again") from None
