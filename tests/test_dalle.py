"""DALL-E on digits (issue 15): a text-conditioned code prior, CLIP re-ranking as a pipeline
step, augmentation for code priors, and the refusals that keep parts composing through the contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from latentzoo.plugins.transformer.train import augment_images

PROMPT = "a seven"


def sample(cli, tmp_path: Path, name: str, *args: str, target: str = "digits-dalle"):
    out = tmp_path / f"{name}.png"
    return out, cli("sample", target, "-n", "4", "--seed", "3", "-o", str(out), "--no-progress", *args)


def test_prompted_reranked_sampling_is_reproducible_and_recorded(cli, tmp_path):
    a, ra = sample(cli, tmp_path, "a", "--prompt", PROMPT, "--candidates", "3")
    b, rb = sample(cli, tmp_path, "b", "--prompt", PROMPT, "--candidates", "3")
    ra.assert_ok(), rb.assert_ok()
    assert a.read_bytes() == b.read_bytes()  # same seed, same bytes
    record = json.loads(a.with_suffix(".json").read_text())
    rerank = record["reranking"]
    assert rerank["candidates"] == 3 and rerank["scorer"] == "digits-clip" and rerank["text"] == PROMPT
    assert len(rerank["scores"]) == 4 and all(-1 <= s <= 1 for s in rerank["scores"])
    assert record["sha256"]["digits-clip"] == rerank["scorer_sha256"]
    assert record["options"]["prompt"] == PROMPT
    plain, rp = sample(cli, tmp_path, "plain", "--prompt", PROMPT)
    uncond, ru = sample(cli, tmp_path, "uncond")
    rp.assert_ok(), ru.assert_ok()
    assert len({a.read_bytes(), plain.read_bytes(), uncond.read_bytes()}) == 3  # re-ranking and the prompt both act
    assert "reranking" not in json.loads(plain.with_suffix(".json").read_text())


def test_reranking_keeps_the_best_candidate_by_the_scorer():
    """The Python API: best of N by digits-clip; kept scores beat the mean score of plain draws."""
    import latentzoo

    torch.set_num_threads(1)
    pipe = latentzoo.load_pipeline("digits-dalle")
    scores: list[float] = []
    best = pipe.sample(6, seed=0, prompt=PROMPT, candidates=4, scores=scores)
    assert best.shape == (6, 1, 32, 32) and len(scores) == 6
    # the same 24 draws the candidates came from: candidate c of output i from its own generator (core.runtime.seeding)
    from latentzoo.core.runtime.seeding import RowGenerators

    plan = pipe.resolve_options(prompt=PROMPT)
    keys = [(i, c) for i in range(6) for c in range(4)]
    codes = pipe._latents(plan, RowGenerators.for_samples(0, keys), 24, None, pipe.levels(plan))
    drawn = pipe.decode(pipe.unscale(codes)).float()
    # candidate 0 of output i is the plain draw of sample i
    torch.testing.assert_close(drawn.view(6, 4, 1, 32, 32)[:, 0], pipe.sample(6, seed=0, prompt=PROMPT), atol=1e-2, rtol=0)
    sims = pipe.scorer.similarity(drawn, [PROMPT])[:, 0].view(6, 4)
    torch.testing.assert_close(torch.tensor(scores), sims.max(1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(best, drawn.view(6, 4, 1, 32, 32)[torch.arange(6), sims.argmax(1)])


def test_api_sample_reranks_like_the_cli(cli, tmp_path):
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    record = latentzoo.sample("digits-dalle", 4, seed=3, output=tmp_path / "api.png", options={"prompt": PROMPT}, candidates=3)
    assert record["reranking"]["candidates"] == 3 and len(record["reranking"]["scores"]) == 4
    out, result = sample(cli, tmp_path, "cli", "--prompt", PROMPT, "--candidates", "3")
    result.assert_ok()
    assert out.read_bytes() == (tmp_path / "api.png").read_bytes()
    for bad in (0, -1, True, 2.5):
        with pytest.raises(LatentzooError, match="--candidates must be"):
            latentzoo.sample("digits-dalle", 1, output=tmp_path / "bad.png", options={"prompt": PROMPT}, candidates=bad)
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize(
    ("target", "args", "fragments"),
    [
        ("digits-dalle", ["--prompt", PROMPT, "--candidates", "0"], ["--candidates must be a whole number from 1"]),
        ("digits-dalle", ["--prompt", PROMPT, "--candidates", "-2"], ["--candidates must be", "not -2"]),
        ("digits-dalle", ["--prompt", PROMPT, "--candidates", "two"], ["--candidates", "two"]),
        ("digits-dalle", ["--candidates", "2", "--set", "random_prompt=false"], ["--candidates re-ranks against the prompt", "--prompt"]),
        ("digits-dalle", ["--candidates", "2", "--prompt", " ", "--set", "random_prompt=false"], ["give --prompt TEXT", "random_prompt"]),
        ("digits-dalle", ["--candidates", "0"], ["--candidates must be a whole number from 1"]),
        ("digits-dalle", ["--prompt", PROMPT, "--candidates", "2", "--scorer", "digits-dvae"], ["scorer digits-dvae cannot score"]),
        ("digits-dalle", ["--prompt", PROMPT, "--candidates", "2", "--scorer", "no-such-model"], ["no-such-model"]),
        ("digits-vqgan-ar", ["--candidates", "2", "--class", "3"], ["pipeline digits-vqgan-ar has no scorer", "--scorer digits-clip"]),
        ("digits-vqgan-ar", ["--prompt", PROMPT], ["prior digits-vqgan-ar-prior", "takes no text", "--prompt"]),
        ("digits-dalle", ["--class", "3"], ["unknown option 'class_label'"]),
        ("digits-dalle", ["--decoder", "digits-vqgan-k16"], ["prior digits-dalle-prior vs decoder digits-vqgan-k16", "codebook_size"]),
        ("digits-dalle", ["--conditioner", "digits-clip"], ["conditioner digits-clip vs prior digits-dalle-prior"]),
    ],
)
def test_bad_dalle_requests_are_one_line_and_write_nothing(cli, tmp_path, target, args, fragments):
    out = tmp_path / "x.png"
    cli("sample", target, "-o", str(out), "--no-progress", *args).assert_one_line_error(*fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config", "cwd"]


def test_compose_records_a_scorer_and_refuses_an_unknown_one(cli):
    parts = ["--encoder", "digits-dvae", "--conditioner", "digits-dalle-text", "--prior", "digits-dalle-prior"]
    parts += ["--decoder", "digits-dvae", "--sampler", "tokens"]
    result = cli("compose", *parts, "--scorer", "digits-clip").assert_ok()
    assert "scorer: digits-clip" in result.stdout
    cli("compose", *parts, "--scorer", "nope").assert_one_line_error("nope")


def test_augmentation_is_seeded_and_keeps_the_background():
    from latentzoo.core.runtime.data import load_dataset

    images = load_dataset("digits", split="train").images[:8]
    a = augment_images(images, 3, shift=2.0, rotate=8.0, scale=0.08, seed=0)
    b = augment_images(images, 3, shift=2.0, rotate=8.0, scale=0.08, seed=0)
    assert a.shape == (24, 1, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a[:8], images) and not torch.equal(a[:8], a[8:16])  # copies differ from the image and each other
    assert float(a.amin()) >= -1 and float(a.amax()) <= 1
    blank = augment_images(torch.full((4, 1, 32, 32), -1.0), 2, shift=3.0, rotate=10.0, scale=0.1, seed=1)
    assert torch.equal(blank, torch.full_like(blank, -1.0))  # what moves in from outside is background, not grey


def test_training_a_text_prior_publishes_prior_conditioner_and_pipeline(cli, tmp_path):
    import yaml

    import latentzoo

    torch.set_num_threads(1)
    out = tmp_path / "run"
    config = {"text": True, "augment": 1, "d_model": 32, "n_layer": 1, "n_head": 2}
    config["tokenizer"] = str(Path(__file__).parents[1] / "weights" / "digits-clip.tokenizer.json")
    latentzoo.train(
        "transformer",
        out=out,
        data="digits-captions",
        name="tiny-dalle-prior",
        steps=2,
        batch_size=8,
        checkpoint_every=2,
        progress=False,
        config=config,
        extra={"encoder": "digits-dvae"},
    )
    fragment = yaml.safe_load((out / "registry.yaml").read_text())
    prior, text = fragment["components"]["tiny-dalle-prior"], fragment["components"]["tiny-dalle-text"]
    assert prior["conditioning"] == text["conditioning_space"]
    assert prior["conditioning"]["encoder"] == "sha256:" + text["weights"]["sha256"][:16]
    assert prior["metrics"]["training_grids"] == 2 * 1437 and "val_bits_empty_prompt" in prior["metrics"]
    assert fragment["pipelines"]["tiny-dalle"]["conditioner"] == "tiny-dalle-text"
    png = tmp_path / "t.png"
    cli("--registry", str(out / "registry.yaml"), "sample", "tiny-dalle", "--prompt", "a two", "-n", "2", "-o", str(png)).assert_ok()
    cli("train", "transformer", "--encoder", "digits-dvae", "-o", str(tmp_path / "r2"), "--set", "text=true").assert_one_line_error(
        "captioned dataset"
    )


def test_training_a_class_prior_without_augmentation(tmp_path):
    """The default path (augment 0): one grid per image, no augmentation flag, held-out NLL measured."""
    import latentzoo

    torch.set_num_threads(1)
    entry = latentzoo.train(
        "transformer",
        out=tmp_path / "run",
        steps=2,
        batch_size=8,
        checkpoint_every=2,
        progress=False,
        config={"num_class_embeds": 11, "d_model": 32, "n_layer": 1, "n_head": 2},
        extra={"encoder": "digits-vqgan-k16"},
    )
    assert entry["class"] == "transformer.prior" and "augment_flag" not in entry["config"]
    assert entry["metrics"]["training_grids"] == 1437 and 0 < entry["metrics"]["held_out_nll_bits_per_code"] < 8


def test_random_prompt_draws_captions_from_the_shipped_set_reproducibly(cli, tmp_path):
    """random_prompt: ancestral p(text) p(codes | text) over the shipped training captions; same seed, same bytes."""
    a, ra = sample(cli, tmp_path, "a", "--set", "random_prompt=true")
    b, rb = sample(cli, tmp_path, "b", "--set", "random_prompt=true")
    empty, re_ = sample(cli, tmp_path, "empty", "--set", "random_prompt=false")
    ra.assert_ok(), rb.assert_ok(), re_.assert_ok()
    assert a.read_bytes() == b.read_bytes() != empty.read_bytes()
    assert "empty prompt" not in ra.stderr and "empty prompt" in re_.stderr  # only the empty-prompt branch warns
    assert json.loads(a.with_suffix(".json").read_text())["options"]["random_prompt"] is True
    # With --prompt, random_prompt changes nothing: the prompt is the caption.
    on, r1 = sample(cli, tmp_path, "on", "--prompt", PROMPT, "--set", "random_prompt=true", "--set", "random_prompt_guidance=1")
    off, r2 = sample(cli, tmp_path, "off", "--prompt", PROMPT, "--set", "random_prompt=false")
    r1.assert_ok(), r2.assert_ok()
    assert on.read_bytes() == off.read_bytes()
    cli("sample", "digits-dalle", "-o", str(tmp_path / "x.png"), "--set", "random_prompt=maybe").assert_one_line_error("random_prompt")
    for bad in ("-1", "hard", ".nan"):
        cli("sample", "digits-dalle", "-o", str(tmp_path / "x.png"), "--set", f"random_prompt_guidance={bad}").assert_one_line_error(
            "random_prompt_guidance"
        )
    assert not (tmp_path / "x.png").exists()


def test_unprompted_reranking_is_reproducible_and_records_the_drawn_captions(cli, tmp_path):
    """No prompt + random_prompt: one caption drawn per output, its candidates scored against it (DALL-E re-ranks every sample)."""
    import latentzoo

    a, ra = sample(cli, tmp_path, "a", "--candidates", "3")
    b, rb = sample(cli, tmp_path, "b", "--candidates", "3")
    plain, rp = sample(cli, tmp_path, "plain")
    ra.assert_ok(), rb.assert_ok(), rp.assert_ok()
    assert a.read_bytes() == b.read_bytes() != plain.read_bytes()  # same seed, same bytes; re-ranking acts
    record = json.loads(a.with_suffix(".json").read_text())
    rerank = record["reranking"]
    assert rerank["candidates"] == 3 and rerank["scorer"] == "digits-clip" and rerank["text"] is None
    assert rerank["caption_set"] == "digits-dalle-text" and len(rerank["caption_indices"]) == len(rerank["captions"]) == 4
    captions = latentzoo.load_pipeline("digits-dalle").conditioner.prompts
    assert rerank["captions"] == [captions[i] for i in rerank["caption_indices"]]
    assert len(rerank["scores"]) == 4 and all(-1 <= s <= 1 for s in rerank["scores"])
    assert "reranking" not in json.loads(plain.with_suffix(".json").read_text())
    api = latentzoo.sample("digits-dalle", 4, seed=3, output=tmp_path / "api.png", candidates=3)  # the API: the same draw
    assert (tmp_path / "api.png").read_bytes() == a.read_bytes() and api["reranking"]["captions"] == rerank["captions"]


def test_unprompted_reranking_scores_each_output_against_its_own_caption():
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError

    torch.set_num_threads(1)
    pipe = latentzoo.load_pipeline("digits-dalle")
    # N = 1 is plain random_prompt sampling, byte for byte (the pipeline makes the sampler's own caption draw).
    assert torch.equal(pipe.sample(5, seed=0, candidates=1), pipe.sample(5, seed=0))
    scores: list[float] = []
    drawn: list[int] = []
    best = pipe.sample(5, seed=1, candidates=4, scores=scores, captions=drawn)
    assert best.shape == (5, 1, 32, 32) and len(scores) == len(drawn) == 5
    texts = [pipe.conditioner.prompts[i] for i in drawn]
    sims = pipe.scorer.similarity(best, texts)
    torch.testing.assert_close(torch.tensor(scores), sims.diagonal(), atol=1e-5, rtol=0)  # each vs its own caption
    # All candidates of an output are drawn for its caption: the sampler takes the pipeline's indices ...
    call = pipe._call_options(pipe.resolve_options(), 3)
    noise = torch.zeros(3, *pipe.prior.latent_shape)
    j = drawn[0]

    def codes(**extra):
        return pipe.sampler.sample(pipe.prior, noise, generator=torch.Generator().manual_seed(7), **{**call, **extra})

    rows = {k: v[[j, j]] for k, v in call["conditioning"].items()}  # ... exactly as if the set held only that caption
    assert torch.equal(codes(prompt_indices=torch.full((3,), j)), codes(prompt_indices=torch.zeros(3, dtype=torch.long), conditioning=rows))
    for bad in (torch.full((3,), len(pipe.conditioner.prompts)), torch.zeros(2, dtype=torch.long), torch.full((3,), -1)):
        with pytest.raises(LatentzooError, match="prompt_indices must be 3 row indices"):
            codes(prompt_indices=bad)
    pipe.conditioner.prompts = None
    with pytest.raises(LatentzooError, match="has no caption set to draw from"):
        pipe.sample(1, seed=0, candidates=2)


def test_random_prompt_uses_the_caption_set_and_refuses_a_conditioner_without_one():
    import latentzoo
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime.data import load_dataset

    torch.set_num_threads(1)
    pipe = latentzoo.load_pipeline("digits-dalle")
    assert pipe.conditioner.prompts == load_dataset("digits-captions", split="train").captions  # the shipped p(text)
    drawn = pipe.sample(3, seed=0, random_prompt=True)
    assert drawn.shape == (3, 1, 32, 32) and torch.equal(drawn, pipe.sample(3, seed=0, random_prompt=True))
    mild = pipe.sample(3, seed=0, random_prompt=True, random_prompt_guidance=1.0)
    assert not torch.equal(mild, pipe.sample(3, seed=0, random_prompt=True, random_prompt_guidance=3.0))
    # random_prompt_guidance None falls back to guidance
    assert torch.equal(mild, pipe.sample(3, seed=0, options={"random_prompt_guidance": None}, random_prompt=True, guidance=1.0))
    pipe.conditioner.prompts = None
    with pytest.raises(LatentzooError, match="has no caption set to draw from; drop random_prompt"):
        pipe.sample(1, seed=0, random_prompt=True)


def test_class_guidance_with_random_class(cli, tmp_path):
    """Classifier-free guidance towards each sample's drawn class (random_class): accepted, and it acts."""
    g2, r1 = sample(cli, tmp_path, "g2", "--guidance", "2", target="digits-vqgan-ar")
    g1, r2 = sample(cli, tmp_path, "g1", "--guidance", "1", target="digits-vqgan-ar")
    r1.assert_ok(), r2.assert_ok()
    assert g2.read_bytes() != g1.read_bytes()
    cli("sample", "digits-vqgan-ar", "-o", str(tmp_path / "x.png"), "--guidance", "2", "--set", "random_class=false").assert_one_line_error(
        "--guidance needs --class or random_class"
    )


def test_swapping_in_the_text_prior_drops_the_class_defaults_and_is_refused(cli, tmp_path):
    """digits-vqgan-ar's class guidance default does not apply to the DALL-E prior: dropped silently (the user never
    set it; issue 28), then one error naming the missing conditioner, nothing written."""
    out = tmp_path / "x.png"
    result = cli("sample", "digits-vqgan-ar", "-o", str(out), "--no-progress", "--prior", "digits-dalle-prior")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    [error] = result.stderr_lines
    assert error.startswith("error:") and "digits-dalle-prior" in error and "--conditioner" in error
    assert not out.exists()
