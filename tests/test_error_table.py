"""Every command, many bad inputs: each must end in ONE line that names the thing and the fix.

The table runs each input through the installed CLI and fails on a traceback, on exit 0, and
on the catch-all ``error: <ExceptionType>: ... (run with --debug for the traceback)`` that
``cli.main`` prints for an exception nobody turned into a ``LatentzooError``: that form
names no fix, so a row that hits it is a bug to fix where the input is read. Add a row for
each new class of bad input.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CATCH_ALL = "(run with --debug for the traceback)"


def _files(tmp: Path) -> dict[str, str]:
    """Bad inputs on disk, by name (created per test in its own directory)."""
    files = {}

    def put(name: str, content: str | bytes) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        files[name] = str(path)

    put("latin1.yaml", b"components:\n  caf\xe9: {class: x, roles: [sampler]}\n")
    put("deep.yaml", "a: " + "[" * 3000 + "]" * 3000 + "\n")
    put(
        "bomb.yaml",
        "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
        + "".join(f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh", strict=True)),
    )
    put("types.yaml", "components:\n  x: {class: 1, roles: sampler}\n")
    put("list.yaml", "- just\n- a list\n")
    put("steps.yaml", "pipelines:\n  p: {prior: digits-ldm, decoder: digits-vqgan, sampler: ddim, defaults: {steps: [50]}}\n")
    put("steps-str.yaml", "pipelines:\n  p: {prior: digits-ldm, decoder: digits-vqgan, sampler: ddim, defaults: {steps: many}}\n")
    put("config-list.yaml", "- 1\n- 2\n")
    put("not-an-image.png", "definitely not a PNG")
    put("not-latents.safetensors", "garbage, not safetensors")
    put("file-not-dir", "x")
    # A run whose only checkpoint has a corrupt state.json (its manifest no longer matches).
    step = tmp / "corrupt-run" / "checkpoints" / "step-00000002"
    put("corrupt-run/checkpoints/step-00000002/state.json", "{not json")
    put("corrupt-run/checkpoints/step-00000002/checkpoint.safetensors", b"\0" * 16)
    (step / "manifest.json").write_text(json.dumps({"step": 2, "files": {"checkpoint.safetensors": "0" * 64, "state.json": "0" * 64}}))
    files["corrupt-run"] = str(tmp / "corrupt-run")
    files["out"] = str(tmp / "out")
    return files


# (id, argv with {placeholders} from _files, fragments the one error line must contain)
ROWS = [
    # registry files, through several commands
    ("list-latin1", ["--registry", "{latin1.yaml}", "list"], ["not UTF-8 text", "save it as UTF-8"]),
    ("list-deep", ["--registry", "{deep.yaml}", "list"], ["nested more than 64 levels"]),
    ("info-bomb", ["--registry", "{bomb.yaml}", "info", "ddim"], ["aliases expand to more than"]),
    ("list-types", ["--registry", "{types.yaml}", "list"], ["components.x.class: must be a str"]),
    ("list-not-mapping", ["--registry", "{list.yaml}", "list"], ["a registry file is a mapping"]),
    ("list-missing-file", ["--registry", "{out}/nope.yaml", "list"], ["cannot read registry file"]),
    ("info-unknown", ["info", "digits-vqgn"], ["did you mean digits-vqgan"]),
    ("sample-steps-list", ["sample", "{steps.yaml}", "-o", "{out}/x.png"], ["defaults.steps", "not a list"]),
    ("sample-steps-str", ["sample", "{steps-str.yaml}", "-o", "{out}/x.png"], ["defaults.steps", "positive integer"]),
    ("compose-latin1", ["compose", "--registry", "{latin1.yaml}"], None),  # click usage error: fine
    # train
    ("train-lr-nan", ["train", "vae", "-o", "{out}/r", "--lr", "nan"], ["--lr must be a finite positive number"]),
    ("train-lr-inf", ["train", "vae", "-o", "{out}/r", "--lr", "inf"], ["--lr must be a finite positive number"]),
    ("train-lr-negative", ["train", "vae", "-o", "{out}/r", "--lr", "-1"], ["--lr must be a finite positive number"]),
    ("train-steps-absurd", ["train", "vae", "-o", "{out}/r", "--steps", str(10**12)], ["--steps", "beyond any real run"]),
    ("train-steps-zero", ["train", "vae", "-o", "{out}/r", "--steps", "0"], ["--steps must be a positive integer"]),
    ("train-seed-huge", ["train", "vae", "-o", "{out}/r", "--seed", str(2**70)], ["--seed must be an integer from 0"]),
    ("train-seed-negative", ["train", "vae", "-o", "{out}/r", "--seed", "-1"], ["--seed must be an integer from 0"]),
    ("train-clip-nan", ["train", "vae", "-o", "{out}/r", "--clip-grad", "nan"], ["--clip-grad must be a finite number"]),
    ("train-set-nan", ["train", "vae", "-o", "{out}/r", "--set", "kl_weight=.nan"], ["training option kl_weight is nan"]),
    ("train-set-bad-yaml", ["train", "vae", "-o", "{out}/r", "--set", "block_out_channels=[8"], ["not valid YAML"]),
    ("train-set-no-equals", ["train", "vae", "-o", "{out}/r", "--set", "kl_weight"], ["use KEY=VALUE"]),
    ("train-config-list", ["train", "vae", "-o", "{out}/r", "--config", "{config-list.yaml}"], ["must be a YAML mapping"]),
    ("train-config-bomb", ["train", "vae", "-o", "{out}/r", "--config", "{bomb.yaml}"], ["aliases expand to more than"]),
    ("train-corrupt-state", ["train", "vae", "-o", "{corrupt-run}", "--resume"], ["no checkpoint in", "verifies"]),
    ("train-fresh-over-run", ["train", "vae", "-o", "{corrupt-run}"], ["already holds a run"]),
    ("train-out-is-file", ["train", "vae", "-o", "{file-not-dir}"], None),
    ("train-unknown-family", ["train", "nosuch", "-o", "{out}/r"], ["no trainer for family 'nosuch'"]),
    ("train-bad-data", ["train", "vae", "-o", "{out}/r", "--data", "{out}/none"], ["no dataset or folder"]),
    # images and latents
    ("reconstruct-not-image", ["reconstruct", "digits-klvae", "{not-an-image.png}", "-o", "{out}/r.png"], ["cannot read image"]),
    ("reconstruct-missing", ["reconstruct", "digits-klvae", "{out}/none.png", "-o", "{out}/r.png"], ["no such file"]),
    ("encode-not-image", ["encode", "digits-klvae", "{not-an-image.png}", "-o", "{out}/z.safetensors"], ["cannot read image"]),
    ("decode-not-latents", ["decode", "digits-klvae", "{not-latents.safetensors}", "-o", "{out}/d.png"], ["not a readable safetensors"]),
    # plugins and scaffolding
    ("plugins-timeout", ["plugins", "--check", "--timeout", "0"], None),
    ("new-plugin-bad-name", ["new-plugin", "!!", "-o", "{out}/p"], []),
    # other helpers' areas: expected to pass once their branches are merged
    pytest.param("sample-nrow", ["sample", "digits", "--nrow", "-1", "-o", "{out}/x.png"], ["--nrow"], id="sample-nrow"),
    pytest.param("sample-seed", ["sample", "digits", "--seed", str(2**70), "-o", "{out}/x.png"], ["--seed"], id="sample-seed"),
    pytest.param("sample-guidance", ["sample", "digits", "--guidance", "nan", "--class", "1"], ["guidance"], id="sample-guidance"),
    pytest.param(
        "compose-steps",
        ["compose", "--prior", "digits-ldm", "--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "leading", "--steps", "-5"],
        ["steps"],
        id="compose-steps",
    ),
    pytest.param("pull-dotdot", ["pull", "../x"], ["ORG/NAME"], id="pull-dotdot"),
    ("convert-missing", ["convert", "{out}/none", "--from", "diffusers", "--name", "cv"], []),
    ("push-unknown", ["push", "nosuch", "--repo", "a/b", "--dry-run"], ["nosuch"]),
]


def _row_id(row) -> str:
    return row.id if hasattr(row, "id") else row[0]


@pytest.mark.parametrize(("name", "argv", "fragments"), [r if hasattr(r, "id") else pytest.param(*r, id=r[0]) for r in ROWS])
def test_bad_input_gives_one_line_that_names_a_fix(cli, tmp_path, name, argv, fragments):
    files = _files(tmp_path)
    args = []
    for arg in argv:
        for key, value in files.items():
            arg = arg.replace("{" + key + "}", value)
        args.append(arg)
    result = cli(*args, env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.stderr + result.stdout, str(result)
    assert CATCH_ALL not in result.stderr, f"catch-all error names no fix:\n{result}"
    if fragments is None:  # click's own usage error (Usage: ... / Error: ...): it names the option
        assert "Error:" in result.stderr, str(result)
        return
    line = result.assert_one_line_error(*fragments)
    assert line.startswith("error: "), line
    if name.startswith("train-"):
        assert not (tmp_path / "out" / "r").exists(), "a failed train left a run directory"
