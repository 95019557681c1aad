"""The sample-quality figure: the Fréchet distance, the shipped digit classifier, and FD on digits."""

from __future__ import annotations

import shutil

import pytest
import torch

from latentzoo.core.contract.errors import LatentzooError, WeightsError
from latentzoo.core.contract.weights import sha256_file
from latentzoo.core.runtime.data import load_dataset
from latentzoo.core.runtime.metrics import frechet_distance
from latentzoo.plugins.datasets import evaluate
from latentzoo.plugins.datasets.classifier import FEATURE_DIM, SHA256, WEIGHTS, load_classifier, random_shift


@pytest.fixture(scope="module")
def held_out():
    return load_dataset("digits", split="test")


def correlated(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + torch.randn(d, generator=g, dtype=torch.float64)


def reference_frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Another route to Tr((S_a S_b)^{1/2}): the eigenvalues of the non-symmetric S_a S_b are real and >= 0."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = (a - mu_a).T @ (a - mu_a) / (len(a) - 1)
    cov_b = (b - mu_b).T @ (b - mu_b) / (len(b) - 1)
    eig = torch.linalg.eigvals(cov_a @ cov_b)
    assert eig.imag.abs().max() < 1e-6 * eig.real.abs().max()
    root_trace = eig.real.clamp_min(0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace)


# --- (a) the Fréchet distance -----------------------------------------------------------


def test_frechet_of_a_set_with_itself_is_zero():
    a = correlated(500, 16, 0)
    assert abs(frechet_distance(a, a)) < 1e-8
    assert abs(frechet_distance(a.float(), a.float())) < 1e-3


def test_frechet_grows_with_a_shift_by_exactly_its_squared_norm():
    a = correlated(500, 16, 0)
    shift = torch.full((16,), 0.5, dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)
    assert frechet_distance(a, a + 2 * shift) > frechet_distance(a, a + shift) > 0


def test_frechet_matches_a_reference_computed_another_way():
    a, b = correlated(400, 12, 1), correlated(300, 12, 2)
    assert frechet_distance(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    # a scaled copy: different mean and covariance
    assert frechet_distance(a, 3 * a) == pytest.approx(reference_frechet(a, 3 * a), rel=1e-6)


# --- (b) the shipped classifier ---------------------------------------------------------


def test_shipped_classifier_matches_its_sha256_and_loads():
    assert WEIGHTS.is_file()
    assert sha256_file(WEIGHTS) == SHA256
    assert WEIGHTS.stat().st_size < 500_000
    model = load_classifier()
    x = torch.zeros(2, 1, 32, 32)
    assert model.features(x).shape == (2, FEATURE_DIM)
    assert model(x).shape == (2, 10)


def test_tampered_or_missing_classifier_weights_are_refused(tmp_path):
    copy = tmp_path / "classifier.safetensors"
    shutil.copy(WEIGHTS, copy)
    load_classifier(copy)  # an intact copy passes
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="sha256"):
        load_classifier(copy)
    with pytest.raises(WeightsError, match="does not exist"):
        load_classifier(tmp_path / "missing.safetensors")


def test_classifier_held_out_accuracy_above_95_percent(held_out):
    assert evaluate.label_accuracy(held_out.images, held_out.labels) > 0.95
    preds = evaluate.predicted_labels(held_out.images)
    assert preds.dtype == torch.long and preds.shape == (len(held_out),)
    hist = evaluate.class_histogram(held_out.images)
    assert hist.shape == (10,) and int(hist.sum()) == len(held_out)
    assert (hist - torch.bincount(held_out.labels.long(), minlength=10)).abs().sum() <= 2 * 0.05 * len(held_out)


def test_features_are_batched_consistently(held_out):
    x = held_out.images[:37]
    whole = evaluate.classifier_features(x)
    pieces = evaluate.classifier_features(x, batch_size=8)
    assert whole.shape == (37, FEATURE_DIM)
    torch.testing.assert_close(whole, pieces, rtol=1e-4, atol=1e-4)
    assert not whole.requires_grad


def test_random_shift_moves_images_within_two_pixels():
    x = torch.full((64, 1, 8, 8), -1.0)
    x[:, :, 3, 3] = 1.0
    shifted = random_shift(x, torch.Generator().manual_seed(0), 2)
    assert shifted.shape == x.shape
    peaks = (shifted[:, 0] == 1.0).nonzero()[:, 1:]
    assert len(peaks) == 64 and peaks.min() >= 1 and peaks.max() <= 5
    assert len({tuple(p.tolist()) for p in peaks}) > 10


# --- (c, d) Fréchet distance on digits --------------------------------------------------


def test_frechet_digits_of_held_out_is_zero_and_noise_is_far(held_out):
    assert abs(evaluate.frechet_digits(held_out.images)) < 1e-4
    noise = torch.rand(500, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert evaluate.frechet_digits(noise) > 20 * evaluate.frechet_floor()


def test_frechet_digits_orders_noisier_digits_worse(held_out):
    g = torch.Generator().manual_seed(0)
    x = held_out.images
    scores = [evaluate.frechet_digits((x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1)) for s in (0.0, 0.3, 0.6)]
    assert scores[0] < scores[1] < scores[2]


def test_floor_is_positive_and_small():
    floor = evaluate.frechet_floor()
    assert 0 < floor < 50
    # fewer training images, a larger (more biased) distance
    assert evaluate.frechet_floor(300) > floor
    with pytest.raises(LatentzooError, match="training images"):
        evaluate.frechet_floor(10_000)


def test_images_of_other_shapes_are_adapted_or_refused(held_out):
    rgb64 = torch.nn.functional.interpolate(held_out.images[:50], size=(64, 64), mode="bilinear").expand(-1, 3, -1, -1)
    assert evaluate.label_accuracy(rgb64, held_out.labels[:50]) > 0.9
    with pytest.raises(LatentzooError, match="image batch"):
        evaluate.classifier_features(torch.zeros(4, 32, 32))
    with pytest.raises(LatentzooError, match="NaN"):
        evaluate.classifier_features(torch.full((2, 1, 32, 32), float("nan")))
