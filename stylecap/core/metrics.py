"""Task metrics: captioning (pycocoevalcap), VQA (the official accuracy) and visual entailment.

Scores are fractions as the reference implementations return them (CIDEr-D can exceed 1); papers
print them ×100. Each ``*_scores`` function returns ``(scores, notes)``: notes say what could not
be computed and why (SPICE without its Stanford CoreNLP models, for instance).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Mapping, Sequence

from stylecap.core.answers import normalize_answer
from stylecap.core.tasks.entailment import LABELS
from stylecap.errors import InputError

# ----------------------------------------------------------------------------- VQA (official)

def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """min(#humans who gave the answer / 3, 1), averaged over the 10 leave-one-out subsets of answers.

    Unlike the official script, answers and prediction are normalised even when all humans agree
    (the script skips it then, so "Two" scores 0 against ten "2"s); with normalised annotations,
    as released, the two agree.
    """
    if not answers:
        return 0.0
    predicted = normalize_answer(prediction)
    matches = [normalize_answer(a) == predicted for a in answers]
    total = sum(matches)
    return sum(min(1.0, (total - hit) / 3) for hit in matches) / len(matches)


def vqa_scores(predictions: Mapping[str, str], answers: Mapping[str, Sequence[str]]) -> tuple[dict, list[str]]:
    accuracies = [vqa_accuracy(predictions[key], answers[key]) for key in predictions]
    return {"accuracy": _mean(accuracies)}, []


# ----------------------------------------------------------------------------- visual entailment

def ve_label(prediction: str) -> str:
    words = re.findall(r"[a-z]+", prediction.lower())
    return words[0] if words else ""


def ve_scores(predictions: Mapping[str, str], labels: Mapping[str, Sequence[str]]) -> tuple[dict, list[str]]:
    """Accuracy, and accuracy within each gold class (how often each class is recognised)."""
    correct, seen = Counter(), Counter()
    for key, prediction in predictions.items():
        gold = labels[key][0]
        seen[gold] += 1
        correct[gold] += ve_label(prediction) == gold
    scores = {"accuracy": sum(correct.values()) / max(1, sum(seen.values()))}
    scores.update({f"accuracy_{label}": correct[label] / seen[label] for label in LABELS if seen[label]})
    return scores, []


# ----------------------------------------------------------------------------- captioning

CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
                   meteor: bool = True, spice: bool = True) -> tuple[dict, list[str]]:
    """coco-caption's metrics on PTB-tokenised text (the tokenizer and METEOR run on Java).

    pycocoevalcap's "CIDEr" is CIDEr-D (clipped n-gram counts, Gaussian length penalty), reported
    under that name; its document frequencies come from these references, so score a whole test
    set at once, not one image at a time.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _require_java()
    keys = list(predictions)
    with _quiet_stderr():  # the tokenizer's JVM reports its speed on stderr
        tokenized = PTBTokenizer().tokenize(  # one JVM for hypotheses and references together
            {**{("hyp", k): [{"caption": predictions[k] or "."}] for k in keys},
             **{("ref", k): [{"caption": r} for r in references[k]] for k in keys}})
    hyps = {k: [tokenized[("hyp", k)][0] or "."] for k in keys}  # "." keeps METEOR from waiting on an empty line
    refs = {k: tokenized[("ref", k)] for k in keys}
    scores, notes = {}, []
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    scores.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
    if meteor:
        scores["METEOR"] = _meteor(refs, hyps)
    scores["ROUGE-L"] = float(Rouge().compute_score(refs, hyps)[0])
    scores["CIDEr-D"] = float(Cider().compute_score(refs, hyps)[0])
    missing = spice_missing()
    if spice and not missing:
        from pycocoevalcap.spice.spice import Spice

        scores["SPICE"] = float(Spice().compute_score(refs, hyps)[0])
    elif spice:
        notes.append(f"SPICE not computed: {missing}")
    return scores, notes


def _meteor(refs: dict, hyps: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(refs, hyps)[0])
    finally:
        scorer.meteor_p.kill()  # one JVM per call; don't leave it to the garbage collector
        scorer.meteor_p.wait()


def spice_missing() -> str | None:
    """Why SPICE cannot run here (None when it can). Its wrapper would download CoreNLP otherwise."""
    from importlib.util import find_spec

    lib = Path(find_spec("pycocoevalcap.spice.spice").origin).parent / "lib"
    needed = [lib / "stanford-corenlp-3.6.0.jar", lib / "stanford-corenlp-3.6.0-models.jar"]
    absent = [p.name for p in needed if not p.is_file()]
    if absent:
        return (f"its Stanford CoreNLP models ({', '.join(absent)}) are not installed; run "
                "`python -m pycocoevalcap.spice.get_stanford_models` once while online")
    return None


@contextlib.contextmanager
def _quiet_stderr():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _require_java() -> None:
    import shutil


    if shutil.which("java") is None:  # a missing outside tool the run needs: an input problem (exit 3)
        raise InputError("captioning metrics need Java (the PTB tokenizer and METEOR are Java programs)",
                         "java not found on PATH", "install a Java runtime (8 or later) and put `java` on PATH")


# ----------------------------------------------------------------------------- dispatch

SCORERS = {"caption": caption_scores, "vqa": vqa_scores, "ve": ve_scores}


def score(metric: str, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]],
          **options) -> tuple[dict, list[str]]:
    """Score predictions (id → text) against references (id → texts) with a task's metric; ``options``
    go to the scorer (``meteor=False`` skips METEOR's slow start in captioning)."""
    return SCORERS[metric](predictions, references, **options)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
