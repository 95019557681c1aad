"""Kinds with checked conventions: ``latentzoo check PRIOR`` and ``plugins --check`` (issue 28, item 5).

Every shipped prior follows the convention its kind declares; a prior that borrows a kind but
breaks its convention (a flow whose time runs backwards, a flow with the opposite velocity, a
denoiser whose prediction type is mislabelled) fails in one line, including one that is named
only in a user's registry file with no pipeline. Few images (4), one thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from latentzoo.core.runtime import conformance

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = yaml.safe_load((ROOT / "registry.yaml").read_text(encoding="utf-8"))["components"]
SHIPPED_PRIORS = sorted(n for n, e in SHIPPED.items() if "prior" in e.get("roles", []) and "weights" in e)
N = "4"


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    for key in [k for k in __import__("os").environ if k.startswith("LATENTZOO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "lz-config"))
    return helpers.in_process_cli(capsys)


def user_registry(tmp_path: Path, name: str, base: str, **changes) -> Path:
    """A user registry file naming one prior: a shipped entry with ``changes`` (config keys under ``config``), weights by absolute path."""
    entry = yaml.safe_load(yaml.safe_dump(SHIPPED[base]))
    entry["weights"]["path"] = str(ROOT / entry["weights"]["path"])
    entry["config"].update(changes.pop("config", {}))
    entry.update(changes)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "components": {name: entry}}), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", SHIPPED_PRIORS)
def test_every_shipped_prior_follows_its_kind(name: str) -> None:
    verdict = conformance.check(name, n=int(N))
    assert verdict.ok, verdict.line()
    if verdict.readings:  # the kind has a check: the declared convention wins by a wide margin, not by noise
        declared, *others = verdict.readings
        assert declared.error < 0.6 * min(r.error for r in others), verdict.line()


def test_check_prints_one_line_per_prior(lz) -> None:
    result = lz("check", "digits-ldm", "-n", N).assert_ok()
    assert result.stdout.count("\n") == 1
    assert "digits-ldm: follows kind denoiser (prediction_type epsilon)" in result.stdout and "on 4 image(s) of digits" in result.stdout
    data = lz("check", "digits-flow-prior", "-n", N, "--json").assert_ok().json()
    assert data["ok"] and data["kind"] == "flow" and data["readings"][0]["convention"] == "noise at t = 1, v = eps - x0"


def test_a_mislabelled_prediction_type_fails_in_one_line(lz, tmp_path: Path) -> None:
    """An epsilon UNet whose config says v_prediction, named only in a user registry file (no pipeline)."""
    mine = user_registry(tmp_path, "mislabelled", "digits-ldm", config={"prediction_type": "v_prediction"})
    lz("--registry", str(mine), "check", "mislabelled", "-n", N).assert_one_line_error(
        "prior mislabelled does not follow kind denoiser's convention", "fit prediction_type epsilon", "set prediction_type: epsilon"
    )


@pytest.mark.parametrize(
    ("cls", "fits", "fix"),
    [
        ("BackwardsFlowPrior", "noise at t = 0, v = x0 - eps", "its time runs backwards"),
        ("FlippedVelocityPrior", "noise at t = 1, v = x0 - eps", "its velocity has the opposite sign"),
    ],
)
def test_a_flow_prior_that_breaks_the_convention_fails_in_one_line(lz, tmp_path: Path, monkeypatch, cls: str, fits: str, fix: str) -> None:
    """A third-party class that declares the built-in kind flow (declared here as its plugin would) but runs time the other way."""
    from latentzoo.core.contract.plugins import get_manager

    decl = {"name": "acme.flow", "roles": ["prior"], "kind": "flow", "family": "acme", "target": f"kind_fixtures:{cls}", "plugin": "acme"}
    monkeypatch.setitem(get_manager().components(), "acme.flow", decl)
    mine = user_registry(tmp_path, "borrowed-flow", "digits-flow-prior", **{"class": "acme.flow", "family": "acme"})
    line = lz("--registry", str(mine), "check", "borrowed-flow", "-n", N).assert_one_line_error(
        "prior borrowed-flow does not follow kind flow's convention (noise at t = 1, v = eps - x0", f"fit {fits}", fix
    )
    assert line.startswith("error: ")


def test_a_kind_no_plugin_declares_is_refused(lz, tmp_path: Path, monkeypatch) -> None:
    from latentzoo.core.contract.plugins import get_manager

    decl = {"name": "acme.odd", "roles": ["prior"], "kind": "mystery", "family": "acme", "target": "kind_fixtures:BackwardsFlowPrior"}
    monkeypatch.setitem(get_manager().components(), "acme.odd", {**decl, "plugin": "acme"})
    mine = user_registry(tmp_path, "odd", "digits-flow-prior", **{"class": "acme.odd", "family": "acme"})
    lz("--registry", str(mine), "check", "odd").assert_one_line_error("kind 'mystery', which no installed plugin declares", "denoiser")


def test_a_kind_without_a_check_is_reported_not_failed(lz) -> None:
    assert "kind analytic declares no conformance check; not checked" in lz("check", "digits-vae-prior").assert_ok().stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["check", "ddim"], "ddim is a sampler, not a prior"),
        (["check", "digits-ldm", "--data", "/no/such/folder"], "no dataset or folder named"),
        (["check", "no-such-prior"], "no component or pipeline named 'no-such-prior'"),
    ],
)
def test_bad_check_input_is_one_line(lz, args: list[str], fragment: str) -> None:
    lz(*args).assert_one_line_error(fragment)


def test_plugins_check_runs_the_conformance_check_on_third_party_priors(lz, tmp_path: Path, monkeypatch) -> None:
    """After the probe, each third-party plugin's priors with weights are checked; a violation is one line."""
    from latentzoo.core.contract import plugins as plugin_module
    from latentzoo.core.contract.plugins import get_manager

    probe = {"name": "acme", "distribution": "acme-flow", "status": "ok", "seconds": 0.1, "detail": ""}
    monkeypatch.setattr(plugin_module, "probe_plugins", lambda timeout: [dict(probe)])
    decl = {"name": "acme.flow", "roles": ["prior"], "kind": "flow", "family": "acme", "target": "kind_fixtures:BackwardsFlowPrior"}
    monkeypatch.setitem(get_manager().components(), "acme.flow", {**decl, "plugin": "acme"})
    mine = user_registry(tmp_path, "borrowed-flow", "digits-flow-prior", **{"class": "acme.flow", "family": "acme"})
    lz("--registry", str(mine), "plugins", "--check").assert_one_line_error("prior borrowed-flow does not follow kind flow's convention")
    monkeypatch.setitem(
        get_manager().components(), "acme.flow", {**decl, "target": "latentzoo.plugins.flow.model:FlowUNetPrior", "plugin": "acme"}
    )
    rows = lz("--registry", str(mine), "plugins", "--check", "--json").assert_ok().json()
    assert [(r["name"], r["status"], r.get("prior")) for r in rows] == [("acme", "ok", None), ("acme", "conforms", "borrowed-flow")]
