"""The claims mechanism itself (``utils.claims``): recording, tolerance, rendering, and the
two ways a wrong number in the prose is caught."""

import json

import pytest
import torch

from utils import claims


@pytest.fixture
def recording(tmp_path, monkeypatch):
    path = tmp_path / "claims.jsonl"
    monkeypatch.setenv(claims.RECORD_TO, str(path))
    return path


def test_a_claim_records_value_text_and_tolerance(recording):
    assert claims.claim("accuracy", torch.tensor(0.463712), "{:.2%}") is not None
    claims.claim("correct", 9036, "{:,}")
    claims.claim("norms", [1.104, 1.17], "{:.2f}")
    claims.claim("pentagon", 0.4, "{:.2f}", tol=0.05)
    claims.claim("correct", 9037, "{:,}")  # a cell run twice: the last value stands
    made = claims.read_recording(recording)
    assert made["accuracy"]["text"] == "46.37%" and made["accuracy"]["tol"] == pytest.approx(1e-4)
    assert made["correct"] == {"value": 9037, "text": "9,037", "fmt": "{:,}", "tol": 0.0}
    assert made["norms"]["text"] == "1.10, 1.17" and made["norms"]["tol"] == pytest.approx(0.01)
    assert made["pentagon"]["tol"] == 0.05


def test_without_a_recording_a_claim_only_returns_its_value(monkeypatch, tmp_path):
    monkeypatch.delenv(claims.RECORD_TO, raising=False)
    monkeypatch.chdir(tmp_path)
    assert claims.claim("x", 3) == 3
    assert list(tmp_path.iterdir()) == []


def test_claims_are_numbers_strings_or_lists_of_numbers():
    with pytest.raises(TypeError, match="a claim is a number"):
        claims.claim("x", {"a": 1})


def test_a_rerun_within_tolerance_agrees_and_one_outside_does_not(recording):
    claims.claim("accuracy", 0.4637, "{:.2%}")
    claims.claim("features", [5, 6, 7], "{}")
    recorded = claims.read_recording(recording)
    near = {"accuracy": {**recorded["accuracy"], "value": 0.46375}, "features": recorded["features"]}
    assert claims.disagreements(recorded, near) == []
    far = {"accuracy": {**recorded["accuracy"], "value": 0.4650, "text": "46.50%"},
           "features": {**recorded["features"], "value": [5, 6, 8]}}
    problems = claims.disagreements(recorded, far)
    assert len(problems) == 2 and "the prose says 46.37%, this run gives 46.50%" in problems[0]
    assert claims.disagreements(recorded, {"accuracy": recorded["accuracy"], "new": recorded["accuracy"]}) == [
        "features: recorded, but this run did not claim it",
        "new: claimed by this run but never recorded (run `python -m utils.claims record`)"]


def test_prose_renders_claims_and_refuses_unknown_ones():
    table = {"accuracy": {"value": 0.4637, "text": "46.37%", "fmt": "{:.2%}", "tol": 1e-4}}
    assert claims.render("GloVe gets {{accuracy}} ({{ accuracy:.1% }}).", table) == "GloVe gets 46.37% (46.4%)."
    with pytest.raises(ValueError, match="refers to the claim 'missing'"):
        claims.render("{{missing}}", table)
    assert claims.render("{{missing}}", table, strict=False) == "{{missing}}"


def test_a_number_typed_into_the_prose_is_found():
    prose = """Intro with {{accuracy}} and `k = 16` and $x_{10} = 0.5$ in 2014, a 2-D plot, L1 and word2vec.
### Exercise: something
> Difficulty: 2/5 · Importance: 4/5 · about 10 minutes

Labels 0 and 1, values in [0, 1). It reaches 46.37% on 19,544 questions, 0.936 MMCS and 13 features.
See [the paper](https://arxiv.org/abs/1301.3781).

## References
- Mikolov et al. 2013, 1301.3781, page 12.
"""
    assert claims.literal_numbers(prose) == ["46.37%", "19,544", "0.936", "13"]


def test_an_edited_number_in_a_chapter_is_caught():
    """Typing a claim's text into a chapter's prose, or editing its recorded value, fails a test."""
    from tests.test_notebooks import SOURCES

    checked = 0
    for source in SOURCES:
        table, prose = claims.load_table(source.stem), source.read_text(encoding="utf-8")
        names = [n for n in claims.claim_names(prose) if claims.literal_numbers(table[n]["text"])]
        name = names[0]
        typed = prose.replace("{{" + name + "}}", table[name]["text"], 1)
        assert len(claims.literal_numbers(typed)) > len(claims.literal_numbers(prose))
        edited = json.loads(json.dumps(table))
        value = edited[name]["value"]
        edited[name]["value"] = [v + 1 for v in value] if isinstance(value, list) else \
            value + 1 + 10 * edited[name]["tol"]
        assert claims.disagreements(edited, table), f"{source.stem}: editing {name} went unnoticed"
        checked += 1
    assert checked == len(SOURCES) == 5
