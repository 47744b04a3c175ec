"""Metric wrappers against hand-computed values: the official VQA accuracy (normalisation and the
leave-one-out average), visual-entailment accuracy, and coco-caption scores (one JVM run each)."""
from __future__ import annotations

import pytest

from stylecap.core.metrics import caption_scores, normalize_answer, spice_missing, ve_scores, vqa_accuracy, vqa_scores


@pytest.mark.parametrize("raw, normalised", [
    ("Two", "2"), ("the dog.", "dog"), ("dont", "don't"), ("a cat, a dog", "cat dog"), ("1,000", "1000"),
    ("yes!", "yes"), ("red-white", "red white"), ("3.5", "3.5"), ("  Many\tthings\n", "many things"),
])
def test_official_answer_normalisation(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_vqa_accuracy_leave_one_out():
    assert vqa_accuracy("red", ["red"] * 10) == 1.0
    assert vqa_accuracy("blue", ["red"] * 10) == 0.0
    # 2 of 10 agree: 8 subsets hold both (2/3), 2 subsets hold one (1/3) → (8·2/3 + 2·1/3) / 10 = 0.6
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)
    # 3 of 10: 7 subsets hold three (1), 3 hold two (2/3) → (7 + 2) / 10 = 0.9
    assert vqa_accuracy("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx(0.9)
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"] * 6) == 1.0
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0 and vqa_accuracy("the yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("cat", []) == 0.0
    scores, _ = vqa_scores({"a": "cat", "b": "red"}, {"a": ["cat"] * 2 + ["dog"] * 8, "b": ["blue"] * 10})
    assert scores["accuracy"] == pytest.approx(0.3)


def test_visual_entailment_accuracy_per_class():
    predictions = {"1": "entailment", "2": "Neutral.", "3": "contradiction", "4": "entailment", "5": "maybe"}
    gold = {"1": ["entailment"], "2": ["neutral"], "3": ["neutral"], "4": ["contradiction"], "5": ["entailment"]}
    scores, _ = ve_scores(predictions, gold)
    assert scores == {"accuracy": pytest.approx(0.4), "accuracy_entailment": 0.5, "accuracy_neutral": 0.5,
                      "accuracy_contradiction": 0.0}


REFERENCES = {
    "1": ["A red circle on a white background.", "A crimson disc on white.", "A red round shape."],
    "2": ["A blue square on a grey background.", "A blue box on grey.", "A square painted blue."],
    "3": ["A green triangle next to a yellow star.", "A yellow star and a green triangle.", "Two green and yellow shapes."],
    "4": ["A purple hexagon in the corner.", "A violet six-sided shape.", "A purple hexagon."],
}


def test_caption_scores_perfect_predictions():
    perfect = {key: refs[0] for key, refs in REFERENCES.items()}
    scores, notes = caption_scores(perfect, REFERENCES)  # the one METEOR (JVM) run of the suite
    assert scores["BLEU-1"] == pytest.approx(1.0) and scores["BLEU-4"] == pytest.approx(1.0)
    assert scores["ROUGE-L"] == pytest.approx(1.0) and scores["METEOR"] > 0.9
    assert scores["CIDEr-D"] > 2.0
    if spice_missing():
        assert any(note.startswith("SPICE not computed") for note in notes) and "SPICE" not in scores


def test_caption_scores_wrong_predictions_score_far_lower():
    wrong = {"1": "a man riding a horse", "2": "two dogs playing in snow", "3": "a bowl of soup", "4": "a city at night"}
    scores, _ = caption_scores(wrong, REFERENCES, meteor=False, spice=False)
    assert "METEOR" not in scores
    assert scores["CIDEr-D"] < 0.1 and scores["BLEU-4"] < 0.01
