"""Templates, prompt building, class embeddings, the training draw and the eval cache."""

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kiclip.text import (
    ALL_TEMPLATES,
    RAW_TEMPLATE,
    TEMPLATES,
    ClassifierCache,
    TemplateSampler,
    build_prompts,
    class_embeddings,
    load_class_names,
    looks_rephrased,
)

REPHRASED = ["Abseiling: A person descends a rock face using a rope.", "Juggling: Keeping objects in the air."]


def test_templates():
    assert len(TEMPLATES) == 28 == len(set(TEMPLATES))
    assert len(ALL_TEMPLATES) == 29 and ALL_TEMPLATES[-1] == RAW_TEMPLATE == "{}"
    assert all(t.count("{}") == 1 and t.endswith(".") for t in TEMPLATES)
    assert "a example of a person performing {}." in TEMPLATES
    assert "a demonstration of {}." in TEMPLATES


def test_prompts_rephrased_and_plain():
    assert build_prompts(REPHRASED, "a video of a person doing {}.", rephrased=True) == [
        "a video of a person doing Abseiling. Abseiling: A person descends a rock face using a rope.",
        "a video of a person doing Juggling. Juggling: Keeping objects in the air.",
    ]
    assert build_prompts(REPHRASED, RAW_TEMPLATE, rephrased=True) == REPHRASED
    assert build_prompts(["juggling", "surfing"], "a photo of {}.", rephrased=False) == [
        "a photo of juggling.", "a photo of surfing."]
    assert build_prompts(["juggling"], RAW_TEMPLATE, rephrased=False) == ["juggling"]
    with pytest.raises(ValueError, match="Name: description"):
        build_prompts(["juggling"], "a photo of {}.", rephrased=True)
    assert looks_rephrased(REPHRASED) and not looks_rephrased(["juggling"])


def test_load_class_names(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text(json.dumps({"1": "b", "0": "a"}))
    assert load_class_names(path) == ["a", "b"]
    path.write_text(json.dumps({"0": "a", "2": "c"}))
    with pytest.raises(ValueError, match="classes.json"):
        load_class_names(path)


class FakeText(nn.Module):
    """encode_text that returns a fixed feature per (template, class) prompt and counts calls."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(table)  # (K * C, D), prompt order = template-major
        self.calls = 0

    def encode_text(self, tokens):
        self.calls += 1
        return self.table[tokens[:, 0]]


def index_tokenizer(prompts):
    return torch.arange(len(prompts)).unsqueeze(1)


def test_class_embeddings_normalise_each_template_first():
    torch.manual_seed(0)
    names, templates = ["a", "b", "c"], TEMPLATES[:2]
    table = torch.randn(2 * 3, 8)
    table[:3] *= 100.0  # template 0's raw features are 100x longer
    fake = FakeText(table)
    got = class_embeddings(fake.encode_text, index_tokenizer, names, templates, rephrased=False)
    per_template = F.normalize(table.view(2, 3, 8), dim=-1)
    expected = F.normalize(per_template.mean(0), dim=-1)
    torch.testing.assert_close(got, expected)
    unnormalised = F.normalize(table.view(2, 3, 8).mean(0), dim=-1)  # the reference's slip
    assert not torch.allclose(got, unnormalised, atol=1e-3)
    chunked = class_embeddings(fake.encode_text, index_tokenizer, names, templates, False, chunk_size=4)
    torch.testing.assert_close(chunked, got)
    assert got.requires_grad  # training draws backpropagate into the text tower


def test_template_sampler_is_seeded_and_resumable():
    draws = [TemplateSampler(seed=7).draw() for _ in range(2)]
    assert draws[0] == draws[1] and draws[0][1] == RAW_TEMPLATE and draws[0][0] in TEMPLATES
    sampler = TemplateSampler(seed=7)
    seen = {sampler.draw()[0] for _ in range(200)}
    assert len(seen) > 20
    state = sampler.state_dict()
    ahead = [sampler.draw() for _ in range(5)]
    resumed = TemplateSampler(seed=0)
    resumed.load_state_dict(state)
    assert [resumed.draw() for _ in range(5)] == ahead


def test_classifier_cache_hits_and_invalidation():
    torch.manual_seed(0)
    names, other = ["a", "b"], ["c", "d", "e"]
    fake = FakeText(torch.randn(29 * 3, 8))
    cache = ClassifierCache(index_tokenizer, rephrased=False)
    first = cache.get(fake, names)
    assert first.shape == (2, 8) and not first.requires_grad and fake.calls == 1
    assert cache.get(fake, names) is first and fake.calls == 1  # cached
    assert cache.get(fake, other).shape == (3, 8) and fake.calls == 2 and len(cache) == 2

    optimiser = torch.optim.SGD(fake.parameters(), lr=0.1)
    fake.table.grad = torch.ones_like(fake.table)
    optimiser.step()  # weights changed in place: the cached classifier is stale
    second = cache.get(fake, names)
    assert fake.calls == 3 and not torch.allclose(first, second)

    fake.load_state_dict({"table": torch.randn(29 * 3, 8)})
    cache.get(fake, names)
    assert fake.calls == 4
    cache.clear()
    cache.get(fake, names)
    assert fake.calls == 5 and len(cache) == 1


def test_classifier_cache_with_tiny_clip():
    from kiclip.model import create_clip
    torch.manual_seed(0)
    clip, tokenizer = create_clip("kiclip-tiny")
    cache = ClassifierCache(tokenizer, rephrased=True)
    got = cache.get(clip, REPHRASED)
    with torch.no_grad():
        per_template = torch.stack([
            F.normalize(clip.encode_text(tokenizer(build_prompts(REPHRASED, t, True))), dim=-1)
            for t in ALL_TEMPLATES])
    torch.testing.assert_close(got, F.normalize(per_template.mean(0), dim=-1), atol=1e-6, rtol=0)
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
