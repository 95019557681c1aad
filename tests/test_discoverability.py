"""What a newcomer reads is true (issue 28, item 6): ``list`` shows what a sampler drives and the
levels it walks, and the docs' tables of built-ins match the live registry."""

from __future__ import annotations

import pytest


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    for key in [k for k in __import__("os").environ if k.startswith("LATENTZOO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "lz-config"))
    return helpers.in_process_cli(capsys)


def table(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """Headers and {name: cells} of a ``list`` table (names with aliases keep only the name)."""
    header, *lines = stdout.splitlines()
    starts = [header.index(h) for h in header.split()]
    rows = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0].split(" (")[0]] = cells
    return header.split(), rows


def test_list_samplers_shows_what_each_drives_and_walks(lz) -> None:
    headers, rows = table(lz("list", "--role", "sampler").assert_ok().stdout)
    assert headers == ["NAME", "ROLE", "FAMILY", "DRIVES", "LEVELS", "DESCRIPTION"]
    drives, levels = headers.index("DRIVES"), headers.index("LEVELS")
    assert (rows["euler"][drives], rows["euler"][levels]) == ("denoiser", "sigma")
    assert (rows["dpmpp-2m-sde"][drives], rows["dpmpp-2m-sde"][levels]) == ("denoiser", "sigma")
    assert (rows["flow-heun"][drives], rows["flow-heun"][levels]) == ("flow", "flow")
    assert (rows["tokens"][drives], rows["tokens"][levels]) == ("autoregressive", "-")  # walks no levels: takes no scheduler


def test_list_schedulers_shows_their_levels(lz) -> None:
    headers, rows = table(lz("list", "--role", "scheduler").assert_ok().stdout)
    assert headers == ["NAME", "ROLE", "FAMILY", "LEVELS", "DESCRIPTION"]
    assert rows["karras"][3] == "sigma" and rows["flow-shift"][3] == "flow"


def test_list_json_carries_drives_and_levels(lz) -> None:
    samplers = {e["name"]: e for e in lz("list", "--role", "sampler", "--json").assert_ok().json()}
    assert samplers["ddim"]["drives"] == ["denoiser"] and samplers["ddim"]["levels"] == "sigma"
    assert samplers["tokens"]["levels"] is None
    schedulers = {e["name"]: e for e in lz("list", "--role", "scheduler", "--json").assert_ok().json()}
    assert schedulers["flow-shift"]["levels"] == "flow" and "drives" not in schedulers["flow-shift"]


def test_the_wrong_sampler_hint_leads_to_a_list_that_answers_it(lz) -> None:
    """The refusal says "see `latentzoo list --role sampler`": that list must show the kind the prior needs."""
    line = lz("sample", "digits-flow", "--sampler", "ddim", "-n", "1", "-o", "x.png").assert_one_line_error("latentzoo list --role sampler")
    assert "flow" in line
    headers, rows = table(lz("list", "--role", "sampler").assert_ok().stdout)
    assert [n for n, cells in rows.items() if cells[headers.index("DRIVES")] == "flow"] == ["flow-euler", "flow-heun"]
