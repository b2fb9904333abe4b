"""The tiny world's one Concept type: every spelling parses to it, bad ones are refused, it knows its prompts
and judge."""

import pytest
import torch

from unlearnkit.tinyworld.styles import STYLES
from unlearnkit.tinyworld.tasks import Concept


@pytest.mark.parametrize("spec,expected", [
    ("7", ("digit", 7)), ("digit:7", ("digit", 7)), ("Seven", ("digit", 7)), ("digit 7", ("digit", 7)),
    ("bold", ("style", 1)), ("style:outlined", ("style", 4)), ("bold style", ("style", 1)),
    ("  Bold Style ", ("style", 1)), ("style bold", ("style", 1)),
])
def test_every_spelling_parses_and_the_spec_round_trips(spec, expected):
    c = Concept.parse(spec)
    assert (c.kind, c.index) == expected
    assert Concept.parse(c.spec) == c and Concept.parse(c.name) == c


@pytest.mark.parametrize(
    "spec", ["12", "style:7", "digit:bold", "colour:red", "", "furry", "bold digit", "digit 7 8"]
)
def test_bad_spellings_are_refused_naming_the_concept(spec):
    with pytest.raises(ValueError, match="concept"):
        Concept.parse(spec)


def test_out_of_range_index_is_refused():
    with pytest.raises(ValueError, match="concept"):
        Concept("digit", 10)
    with pytest.raises(ValueError, match="concept"):
        Concept("style", len(STYLES))


def test_detector_asks_the_judge_for_the_concepts_class():
    class FixedJudge(torch.nn.Module):
        """Logits that always pick class 1 (the judge the detector is given; not a trained model)."""

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.ones(len(x), dtype=torch.long), len(STYLES)).float()

    images = torch.zeros(3, 3, 16, 16)
    assert Concept.parse("bold").detector(FixedJudge())(images).tolist() == [True] * 3
    assert Concept.parse("slanted").detector(FixedJudge())(images).tolist() == [False] * 3


def test_generation_prompts_name_each_class():
    prompts, labels = Concept("digit", 7).generation_prompts(3)
    assert len(prompts) == 30 and labels.tolist() == [d for d in range(10) for _ in range(3)]
    assert prompts[21] == "a handwritten digit 7"
    prompts, labels = Concept.parse("bold").generation_prompts(4)
    assert len(prompts) == 4 * len(STYLES)
    assert all(p.endswith(f"in {STYLES[int(s)]} style") for p, s in zip(prompts, labels))
    assert len({p.split(" in ")[0] for p in prompts}) > 1  # several digits per style
    with pytest.raises(ValueError, match="per_class"):
        Concept("digit", 1).generation_prompts(0)
