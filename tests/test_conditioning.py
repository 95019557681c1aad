"""The conditioning contract through the CLI: `compose` checks a conditioner against what the prior accepts.

Each row composes a pipeline from the shipped registry plus a small registry file of
text priors and text encoders (no weights are loaded by compose; the `sample` rows show
the refusal comes before any weights are read).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from latentzoo.core.contract.conditioning import ConditioningSpace, check_conditioning
from latentzoo.core.contract.errors import ContractError

CLIP_ID = "sha256:df1c74a92f02a38f"  # digits-clip's identity, as the shipped registry states it
SPACE = "{kind: continuous, channels: 3, factor: 4, autoencoder: 'sha256:02cb6b436681a56b', codebook_size: 128, scaling_factor: 1.5630550384521484, shift: 0.2024935632944107}"

REGISTRY = f"""
components:
  t2i-prior:
    class: diffusion.unet
    roles: [prior]
    latent_space: {SPACE}
    conditioning: {{kind: text, width: 64, sequence_length: 16, encoder: '{CLIP_ID}'}}
  t2i-pooled-prior:
    class: diffusion.unet
    roles: [prior]
    latent_space: {SPACE}
    conditioning: {{kind: text, width: 64, sequence_length: 16, pooled: true, encoder: '{CLIP_ID}'}}
  other-clip:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: text, width: 64, sequence_length: 16, pooled: true, encoder: 'sha256:0123456789abcdef'}}
  wide-clip:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: text, width: 128, sequence_length: 16, pooled: true, encoder: '{CLIP_ID}'}}
  short-clip:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: text, width: 64, sequence_length: 8, pooled: true, encoder: '{CLIP_ID}'}}
  tokens-only-clip:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: text, width: 64, sequence_length: 16, encoder: '{CLIP_ID}'}}
  image-embedder:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: image-embedding, width: 64, sequence_length: 16, encoder: '{CLIP_ID}'}}
  broken-clip:
    class: clip.model
    roles: [conditioner]
    conditioning_space: {{kind: text, width: 64, sequence_length: 16, pooled: true, encoder: '{CLIP_ID}'}}
    weights: {{path: does-not-exist.safetensors, sha256: '{"0" * 64}'}}
"""

BASE = ["--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "leading"]

# (id, prior, conditioner, extra args, expected exit 0?, fragments of stdout+stderr)
CASES = [
    ("text-fits", "t2i-prior", "digits-clip", [], True, ["conditioner: digits-clip", "prior: t2i-prior"]),
    ("pooled-fits", "t2i-pooled-prior", "digits-clip", [], True, ["conditioner: digits-clip"]),
    ("tokens-only-fits-unpooled-prior", "t2i-prior", "tokens-only-clip", [], True, ["conditioner: tokens-only-clip"]),
    ("other-identity", "t2i-prior", "other-clip", [], False, ["other-clip", "t2i-prior", "encoder", "--allow-mismatch"]),
    ("other-identity-allowed", "t2i-prior", "other-clip", ["--allow-mismatch"], True, ["warning: --allow-mismatch", "other-clip"]),
    ("width", "t2i-prior", "wide-clip", [], False, ["wide-clip", "t2i-prior", "width 128 != 64"]),
    ("width-not-allowed", "t2i-prior", "wide-clip", ["--allow-mismatch"], False, ["width 128 != 64"]),
    ("sequence-length", "t2i-prior", "short-clip", [], False, ["short-clip", "t2i-prior", "sequence_length 8 != 16"]),
    ("kind", "t2i-prior", "image-embedder", [], False, ["image-embedder", "kind 'image-embedding' != 'text'"]),
    ("needs-pooled", "t2i-pooled-prior", "tokens-only-clip", [], False, ["tokens-only-clip", "pooled False != True"]),
    ("missing-conditioner", "t2i-prior", None, [], False, ["prior t2i-prior", "no conditioner", "--conditioner"]),
    ("unconditional-prior", "digits-ldm", "digits-clip", [], False, ["digits-ldm is unconditional", "digits-clip", "drop the conditioner"]),
    ("class-prior", "digits-ldm-cond", "digits-clip", [], False, ["digits-ldm-cond takes class conditioning", "digits-clip"]),
    ("class-prior-alone", "digits-ldm-cond", None, [], True, ["prior: digits-ldm-cond"]),
    ("not-a-conditioner", "t2i-prior", "digits-vqgan", [], False, ["digits-vqgan", "not a conditioner"]),
]


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    path = tmp_path / "t2i.yaml"
    path.write_text(REGISTRY)
    return path


@pytest.mark.parametrize(("prior", "conditioner", "extra", "ok", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compose_checks_conditioning(cli, registry_file, prior, conditioner, extra, ok, fragments):
    args = ["--registry", str(registry_file), "compose", "--prior", prior, *BASE, *extra]
    if conditioner:
        args += ["--conditioner", conditioner]
    result = cli(*args)
    out = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, out
    if not ok:
        assert "Traceback" not in out and len(result.stderr.strip().splitlines()) == 1, out
    for fragment in fragments:
        assert fragment in out, (fragment, out)


def test_composed_yaml_round_trips(cli, registry_file, tmp_path):
    """A composed text pipeline written to a file composes again (the conditioner is a pipeline key)."""
    out = tmp_path / "t2i-pipe.yaml"
    args = ["--registry", str(registry_file), "compose", "--prior", "t2i-prior", "--conditioner", "digits-clip", *BASE]
    assert cli(*args, "--name", "t2i-pipe", "-o", str(out)).returncode == 0
    assert "conditioner: digits-clip" in out.read_text()
    info = cli("--registry", str(registry_file), "--registry", str(out), "info", "t2i-pipe", "--json")
    assert info.returncode == 0 and '"ok": true' in info.stdout, info
    # The same pipeline file with its conditioner swapped for another identity is refused by info too.
    out.write_text(out.read_text().replace("digits-clip", "other-clip"))
    info = cli("--registry", str(registry_file), "--registry", str(out), "info", "t2i-pipe", "--json")
    assert '"ok": false' in info.stdout and "other-clip" in info.stdout, info


def test_refused_before_weights_load(cli, registry_file):
    """`sample` refuses a misfit conditioner before reading any weights (broken-clip's file does not exist)."""
    result = cli("--registry", str(registry_file), "sample", "--prior", "digits-ldm", "--conditioner", "broken-clip", *BASE, "-n", "1")
    assert result.returncode != 0
    assert "digits-ldm is unconditional" in result.stderr and "does-not-exist" not in result.stderr, result


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"width": 64}, "missing kind"),
        ({"kind": "text"}, "missing width"),
        ({"kind": "", "width": 64}, "non-empty string"),
        ({"kind": "text", "width": 0}, "positive integer"),
        ({"kind": "text", "width": True}, "positive integer"),
        ({"kind": "text", "width": 64, "sequence_length": -1}, "positive integer"),
        ({"kind": "text", "width": 64, "pooled": "yes"}, "true or false"),
        ({"kind": "text", "width": 64, "encoder": 3}, "identity string"),
        ({"kind": "text", "width": 64, "dims": 3}, "unknown field(s) dims"),
        ([1, 2], "conditioning_space: must be a dict"),
    ],
)
def test_bad_conditioning_entries_are_refused_in_the_registry(cli, tmp_path, data, fragment):
    import yaml

    path = tmp_path / "bad.yaml"
    body = {"class": "clip.model", "roles": ["conditioner"], "conditioning_space": data}
    path.write_text(yaml.safe_dump({"components": {"bad-clip": body}}))
    result = cli("--registry", str(path), "list")
    assert result.returncode != 0 and fragment in result.stderr and "bad-clip" in result.stderr, result
    with pytest.raises(ContractError, match="conditioning"):
        ConditioningSpace.from_dict(data)


def test_shipped_conditioner_and_class_priors_parse():
    from latentzoo.core.contract.registry import Registry

    reg = Registry.load([])
    clip = reg.entries["digits-clip"].conditioning_space
    assert clip is not None and (clip.kind, clip.width, clip.sequence_length, clip.pooled) == ("text", 64, 16, True)
    cond = reg.entries["digits-ldm-cond"].conditioning
    assert cond is not None and cond.kind == "class" and not cond.needs_conditioner
    assert reg.entries["digits-ldm"].conditioning is None
    # A plugin kind works the same way: kind is an open string.
    mine = ConditioningSpace("depth-map", 32, 4, encoder="sha256:1")
    assert check_conditioning("p", mine, "c", mine) == []
