"""Closed-set tasks: the PubHealth and ARC-Challenge datasets mapped to `question`, `choices` and the gold index."""

import datasets
import pytest

from r3hf.closed_set import load_closed_set_dataset


def pubhealth_rows(labels):
    return [
        {
            "claim_id": str(i),
            "claim": f"Claim {i} about health.",
            "date_published": "2020-01-01",
            "explanation": "Because.",
            "fact_checkers": "someone",
            "main_text": "Text.",
            "sources": "",
            "label": label,
            "subjects": "Health",
        }
        for i, label in enumerate(labels)
    ]


def arc_rows():
    return [
        {
            "id": "q1",
            "question": "Which is wet?",
            "choices": {"text": ["sand", "rain", "salt", "dust"], "label": list("ABCD")},
            "answerKey": "B",
        },
        {
            "id": "q2",
            "question": "Which is hot?",
            "choices": {"text": ["ice", "snow", "fire", "fog"], "label": list("1234")},
            "answerKey": "3",
        },
    ]


def test_pubhealth_keeps_true_and_false_claims_as_self_rag_does(tmp_path):
    features = datasets.Features(
        {
            **{k: datasets.Value("string") for k in ("claim_id", "claim", "date_published", "explanation")},
            **{k: datasets.Value("string") for k in ("fact_checkers", "main_text", "sources", "subjects")},
            "label": datasets.ClassLabel(names=["false", "mixture", "true", "unproven"]),
        }
    )
    path = tmp_path / "health_fact.parquet"
    datasets.Dataset.from_list(pubhealth_rows([0, 1, 2, 3, 2]), features=features).to_parquet(str(path))
    ds = load_closed_set_dataset("pubhealth", str(path))
    assert ds.column_names == ["question", "choices", "answers"]
    assert ds["question"] == ["Claim 0 about health.", "Claim 2 about health.", "Claim 4 about health."]
    assert ds["choices"] == [["true", "false"]] * 3 and ds["answers"] == [1, 0, 0]
    text_labels = tmp_path / "text_labels.parquet"
    datasets.Dataset.from_list(pubhealth_rows(["true", "false"])).to_parquet(str(text_labels))
    assert load_closed_set_dataset("pubhealth", str(text_labels))["answers"] == [0, 1]


def test_unknown_labels_and_tasks_are_clear_errors(tmp_path):
    path = tmp_path / "bad.parquet"
    datasets.Dataset.from_list(pubhealth_rows(["true", "maybe"])).to_parquet(str(path))
    with pytest.raises(ValueError, match="claim '1' has label 'maybe'"):
        load_closed_set_dataset("pubhealth", str(path))
    rows = arc_rows()
    rows[0]["answerKey"] = "E"
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "arc.parquet"))
    with pytest.raises(ValueError, match="answerKey 'E'"):
        load_closed_set_dataset("arc_c", str(tmp_path / "arc.parquet"))
    rows = arc_rows()
    rows[1]["choices"]["text"] = rows[1]["choices"]["text"][:3]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "arc_short.parquet"))
    with pytest.raises(ValueError, match="has 4 choice labels for 3 texts"):
        load_closed_set_dataset("arc_c", str(tmp_path / "arc_short.parquet"))
    with pytest.raises(ValueError, match="Unknown closed-set task 'fever'"):
        load_closed_set_dataset("fever", str(path))
    with pytest.raises(ValueError, match="needs the arc_c columns"):
        load_closed_set_dataset("arc_c", str(path))


def test_arc_challenge_lists_its_choices_in_the_question(tmp_path):
    path = tmp_path / "arc.parquet"
    datasets.Dataset.from_list(arc_rows()).to_parquet(str(path))
    ds = load_closed_set_dataset("arc_c", str(path))
    assert ds[0] == {
        "question": "Which is wet?\nA: sand\nB: rain\nC: salt\nD: dust",
        "choices": ["A", "B", "C", "D"],
        "answers": 1,
    }
    assert ds[1]["question"].endswith("C: fire\nD: fog") and ds[1]["answers"] == 2  # numbered choices become letters
