"""What a newcomer reads is true (issue 28, item 6): ``list`` shows what a sampler drives and the
levels it walks, and the docs' tables of built-ins match the live registry."""

from __future__ import annotations

import re
from pathlib import Path

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


# -- the docs' tables of built-ins against the live registry ----------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs"
NUMBERS = {"four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table in ``path``: (header cells, rows of cells)."""
    found, block = [], []
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif block:
            if len(block) > 2:
                found.append((block[0], block[2:]))
            block = []
    return found


def table_with(path: Path, *header: str) -> list[list[str]]:
    rows = [rows for head, rows in tables(path) if head[: len(header)] == list(header)]
    assert len(rows) == 1, f"{path.name}: one table headed {header}, found {len(rows)}"
    return rows[0]


def names_in(cell: str) -> list[str]:
    """`a` (`alias`), `b`: the registry names of a cell (the first code span of each comma-separated part, aliases dropped)."""
    return re.findall(r"(?:^|, )`([^`]+)`", re.sub(r" \([^)]*\)", "", cell))


def test_plugins_md_counts_hooks_and_roles_once_and_right() -> None:
    from latentzoo.core.contract import hookspecs
    from latentzoo.core.contract.interfaces import ROLES

    hooks = sorted(n for n in dir(hookspecs) if n.startswith("latentzoo_"))
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    assert sorted(re.sub(r"\(.*", "", row[0]).strip("`") for row in table_with(DOCS / "plugins.md", "hook", "returns")) == hooks
    assert sorted(row[0].strip("`").lower() for row in table_with(DOCS / "plugins.md", "role", "must provide")) == sorted(ROLES)
    for path in (DOCS / "plugins.md", DOCS.parent / "README.md", DOCS.parent / "core" / "contract" / "hookspecs.py"):
        said = path.read_text(encoding="utf-8").lower()
        for word, n in NUMBERS.items():
            assert n == len(hooks) or f"{word} hooks" not in said, f"{path.name} says {word} hooks; there are {len(hooks)}"
            assert n == len(ROLES) or (f"{word} roles" not in said and f"{word} interfaces" not in said), f"{path.name}: {word} roles"
    assert "six hooks" in text and "seven roles" in text


def test_plugins_md_kinds_table_is_the_live_one() -> None:
    from latentzoo.core.contract.plugins import get_manager

    live = {k: (d["plugin"], bool(d.get("check"))) for k, d in get_manager().kinds().items()}
    documented = {
        row[0].strip("`"): (row[1], not row[3].startswith("(no check"))
        for row in table_with(DOCS / "plugins.md", "kind", "plugin", "convention")
    }
    assert documented == live


def test_samplers_md_tables_are_the_live_registry() -> None:
    from latentzoo.core.contract.registry import Registry

    reg = Registry.load()
    path = DOCS / "samplers.md"
    documented: dict[str, str] = {}
    for header, role in [
        (("registry name", "class"), "scheduler"),
        (("registry name", "algorithm", "model evaluations", "random?"), "sampler"),
        (("registry name (ComfyUI alias)", "algorithm"), "sampler"),
        (("registry name (ComfyUI alias)", "levels (then 0)"), "scheduler"),
    ]:
        for row in table_with(path, *header):
            for name in names_in(row[0]):
                documented.setdefault(name, role)
                entry = reg.get(name)  # a name the docs show must exist
                assert role in entry.roles, f"docs/samplers.md lists {name} as a {role}"
                if header[1] == "class":
                    assert f"`{entry.data['class']}`" == row[1], f"docs/samplers.md: {name} is class {entry.data['class']}"
    for row in table_with(path, "registry name (ComfyUI alias)", "algorithm") + table_with(
        path, "registry name (ComfyUI alias)", "levels (then 0)"
    ):
        for name, shown in re.findall(r"`([^`]+)`(?: \(([^)]*)\))?", row[0]):
            aliases = re.findall(r"`([^`]+)`", shown)  # each name's aliases as the docs show them
            live_aliases = reg.get(name).data.get("aliases") or []
            assert all(a in live_aliases or a.startswith("_") for a in aliases), f"{name}: docs aliases {aliases}, live {live_aliases}"

    def walks_sigma(entry) -> bool:  # a sampler without levels walks none; a scheduler picks sigma unless it says otherwise
        levels = reg.declaration(entry).get("levels")
        return (levels if "sampler" in entry.roles else levels or "sigma") == "sigma"

    sigma = {e.name for e in reg.list() if e.section == "components" and {"sampler", "scheduler"} & set(e.roles) and walks_sigma(e)}
    assert sigma == set(documented), f"undocumented: {sorted(sigma - set(documented))}; gone: {sorted(set(documented) - sigma)}"


def test_info_on_a_prior_shows_its_kinds_convention(lz) -> None:
    kind = lz("info", "digits-flow-prior", "--json").assert_ok().json()["kind"]
    assert kind == {
        "name": "flow",
        "declared_by": "flow",
        "convention": {"x_t": "(1 - t) x0 + t eps", "noise_at": 1, "velocity": "eps - x0", "levels": "flow"},
        "checked": True,
    }
    assert lz("info", "digits-vae-prior", "--json").assert_ok().json()["kind"]["checked"] is False
