"""Inspecting (no torch): list, info, plugins, formats."""

from __future__ import annotations

from typing import Any

import click

from latentzoo.core.contract.errors import LatentzooError

from .common import ROLE_CHOICES, _emit_json, _registry, _table


def _plugin_blocks(report: list[Any]) -> None:
    """``plugins -v``: every field of every plugin, one block each."""
    from importlib import metadata

    for i, p in enumerate(report):
        if i:
            click.echo()
        if p.location:
            where = ("loaded from", p.location)
        else:  # never imported (broken on import, disabled, incompatible): say where it is installed
            try:
                site = str(metadata.distribution(p.distribution).locate_file("")) if p.distribution else "?"
            except metadata.PackageNotFoundError:
                site = "?"
            where = ("installed in", f"{site} (not imported)")
        fields = [
            ("status", p.status if p.status == "ok" else f"{p.status}: {p.error}"),
            ("distribution", f"{p.distribution or '?'} {p.version or ''}".rstrip() + (" (built-in)" if p.builtin else "")),
            ("module", p.module),
            where,
            ("plugin api", str(p.api) if p.api is not None else "-"),
            ("hooks", ", ".join(h.removeprefix("latentzoo_") for h in p.hooks) or "-"),
            ("components", ", ".join(p.components) or "-"),
            ("datasets", ", ".join(p.datasets) or "-"),
            ("kinds", ", ".join(p.kinds) or "-"),
        ]
        click.echo(p.name)
        for label, value in fields:
            click.echo(f"  {label + ':':<14}{value}")


@click.command("list")
@click.option("--role", type=click.Choice(ROLE_CHOICES), help="Only this role.")
@click.option("--family", help="Only this family (vqgan, diffusion, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def list_cmd(ctx: click.Context, role: str | None, family: str | None, as_json: bool) -> None:
    """List named components and pipelines in the registry."""
    reg = _registry(ctx)
    entries = reg.list(role=role, family=family)
    for warning in reg.shadow_warnings({e.name for e in entries}):
        click.echo(f"warning: {warning}", err=True)
    walks = {e.name: _walks(reg, e) for e in entries}
    if as_json:
        _emit_json([{**e.summary(), **walks[e.name]} for e in entries])
        return
    if not entries:
        click.echo("nothing matches")
        return
    rows = [[_with_aliases(e), "/".join(e.roles), e.data.get("family", ""), (e.data.get("description") or "")[:70]] for e in entries]
    headers = ["NAME", "ROLE", "FAMILY", "DESCRIPTION"]
    for key in ("drives", "levels"):  # what a sampler drives and the levels it walks: the columns a swap needs
        if role in ("sampler", "scheduler") and any(key in w for w in walks.values()):
            rows = [[*row[:-1], _walk_text(walks[e.name].get(key)), row[-1]] for row, e in zip(rows, entries, strict=True)]
            headers.insert(-1, key.upper())
    if any(e.shadows for e in entries):  # a later layer rebinds a name: say so beside it
        rows = [[*row, f"shadows {e.shadows}" if e.shadows else ""] for row, e in zip(rows, entries, strict=True)]
        headers.append("SHADOWS")
    _table(rows, headers)


def _walks(reg: Any, entry: Any) -> dict[str, Any]:
    """A sampler's ``drives`` (prior kinds) and ``levels`` (level type), a scheduler's ``levels``: read from its declaration (no import)."""
    roles = set(entry.roles)
    if entry.section == "pipelines" or not roles & {"sampler", "scheduler"}:
        return {}
    try:
        decl = reg.declaration(entry)
    except LatentzooError:
        return {}
    if "sampler" in roles:
        return {"drives": decl.get("drives"), "levels": decl.get("levels")}
    return {"levels": decl.get("levels") or "sigma"}  # compose.check_levels: a scheduler picks sigma levels unless it says otherwise


def _walk_text(value: Any) -> str:
    if value is None:
        return "-"
    return ",".join(value) if isinstance(value, list | tuple) else str(value)


def _kind_summary(kind: str) -> dict[str, Any]:
    """A prior kind's declaration as ``info`` shows it (read from its plugin's declaration, no import)."""
    from latentzoo.core.contract.plugins import get_manager

    decl = get_manager().kinds().get(kind)
    if decl is None:
        return {"name": kind, "declared_by": None, "note": "no installed plugin declares this kind; `latentzoo check` cannot test it"}
    return {"name": kind, "declared_by": decl["plugin"], "convention": decl["convention"], "checked": bool(decl.get("check"))}


def _with_aliases(entry) -> str:
    aliases = entry.data.get("aliases") or []
    return f"{entry.name} ({', '.join(aliases)})" if aliases else entry.name


@click.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show one component or pipeline: config, weights, latent space, and whether it composes."""
    import yaml

    from latentzoo.core.contract.compose import PipelineSpec, check_spec, component_options_table, pipeline_options_table, resolve_component
    from latentzoo.core.runtime.api import declared_role

    reg = _registry(ctx)
    for warning in reg.shadow_warnings({name}):
        click.echo(f"warning: {warning}", err=True)
    if reg.canonical(name) in reg.entries:  # a name or an alias
        entry = reg.get(name)
    else:
        entry = resolve_component(reg, name, declared_role(name))
    data = entry.summary()
    if entry.section == "pipelines":
        spec = PipelineSpec.from_entry(entry)
        try:
            warnings = check_spec(reg, spec)
            data["composes"] = {"ok": True, "warnings": warnings}
        except LatentzooError as exc:
            data["composes"] = {"ok": False, "error": str(exc)}
        data["options"] = pipeline_options_table(reg, spec)
    else:
        try:
            decl = reg.declaration(entry)
            data["class_declaration"] = {k: v for k, v in decl.items() if k not in ("name", "options")}
            if "kind" in decl:  # the convention a prior of this kind follows (`latentzoo check` tests it)
                data["kind"] = _kind_summary(decl["kind"])
        except LatentzooError as exc:
            data["class_declaration"] = {"error": str(exc)}
        if entry.latent_space:
            data["latent_space_summary"] = entry.latent_space.describe()
        data["options"] = component_options_table(reg, entry)
    if as_json:
        _emit_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=120).rstrip())


def _conformance_rows(plugin_names: set[str]) -> list[dict[str, Any]]:
    """``latentzoo check`` on each registry prior of these (third-party) plugins that has weights: one probe-shaped row each."""
    import time

    from latentzoo.core.contract.plugins import get_manager
    from latentzoo.core.runtime.conformance import check, checkable

    if not plugin_names:
        return []
    reg = _registry(click.get_current_context())
    components = get_manager().components()
    rows = []
    for entry in reg.list(role="prior"):
        decl = components.get(entry.data.get("class", ""))
        if decl is None or decl["plugin"] not in plugin_names or not checkable(reg, entry):
            continue
        started = time.perf_counter()
        try:
            verdict = check(entry.name, extra=click.get_current_context().find_root().obj["registries"])
            status, detail = ("conforms" if verdict.ok else "violates"), verdict.line()
        except LatentzooError as exc:
            status, detail = "violates", f"prior {entry.name}: cannot be checked: {exc}"
        seconds = round(time.perf_counter() - started, 2)
        rows.append(
            {"name": decl["plugin"], "distribution": None, "status": status, "seconds": seconds, "detail": detail, "prior": entry.name}
        )
    return rows


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any plugin is broken or incompatible.")
@click.option("-v", "--verbose", is_flag=True, help="One block per plugin, with where it was loaded from and its hooks.")
@click.option(
    "--check",
    is_flag=True,
    help="Probe each third-party plugin in a subprocess (time budget): finds one that exits or hangs at import; "
    "then run `latentzoo check` on its priors that have weights.",
)
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=20.0, show_default=True, help="Seconds the --check probes may take.")
def plugins(as_json: bool, strict: bool, verbose: bool, check: bool, timeout: float) -> None:
    """Show installed plugins: distribution, version, location, hooks, components, status."""
    from latentzoo.core.contract.plugins import get_manager, probe_plugins

    if check:  # before anything loads plugins in this process: a plugin that kills it must not stop the probe
        probes = probe_plugins(timeout)
        if not any(p["status"] in ("exits", "hangs", "fails") for p in probes):  # safe to import them here: check their priors' kinds
            probes += _conformance_rows({p["name"] for p in probes if p["status"] == "ok"})
        if as_json:
            _emit_json(probes)
        else:
            _table(
                [[p["name"], p["distribution"] or "?", p["status"], f"{p['seconds']}", p["detail"]] for p in probes],
                ["PLUGIN", "DISTRIBUTION", "PROBE", "SECONDS", "DETAIL"],
            )
        violating = [p for p in probes if p["status"] == "violates"]
        if violating:
            raise LatentzooError(f"{violating[0]['detail']}" + (f" (and {len(violating) - 1} more prior(s))" if len(violating) > 1 else ""))
        bad = [p for p in probes if p["status"] in ("exits", "hangs", "fails")]
        if bad:
            raise LatentzooError(
                f"{len(bad)} plugin(s) fail the probe: {', '.join(p['name'] + ' (' + p['status'] + ')' for p in bad)}; "
                "uninstall them or leave them out with LATENTZOO_PLUGINS=<other plugins>"
            )
        return

    click.get_current_context().find_root().command._add_plugin_commands()  # run the commands hook too, so a plugin that raises there is reported
    from latentzoo.interop.formats import formats

    report = get_manager().report()
    declared: dict[str, list[str]] = {}  # the formats each plugin declares (a bad declaration marks its plugin broken)
    for fmt in formats().values():
        declared.setdefault(fmt.plugin, []).append(fmt.name)
    if as_json:
        _emit_json([{**p.to_dict(), "formats": declared.get(p.name, [])} for p in report])
    elif verbose:
        _plugin_blocks(report)
    else:
        rows = [
            [
                p.name,
                f"{p.distribution or '?'} {p.version or ''}".strip(),
                p.status,
                ", ".join(p.components + p.datasets + [f"kind {k}" for k in p.kinds] + [f"format {f}" for f in declared.get(p.name, [])])
                or "-",
                p.error or (f"warning: {p.warning}" if p.warning else ""),
            ]
            for p in report
        ]
        _table(rows, ["PLUGIN", "DISTRIBUTION", "STATUS", "PROVIDES", "ERROR"])
    bad = [p for p in report if p.status in ("broken", "incompatible")]
    if strict and bad:
        raise LatentzooError(f"{len(bad)} plugin(s) not usable: {', '.join(f'{p.name} ({p.status})' for p in bad)}")


@click.command("formats")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def formats_cmd(as_json: bool) -> None:
    """List the formats plugins declare for `convert --from` and `export --to`."""
    from latentzoo.interop.api import formats

    found = formats()
    if as_json:
        _emit_json(
            [
                {"name": f.name, "plugin": f.plugin, "convert": f.can("convert"), "export": f.can("export"), "description": f.description}
                for f in found
            ]
        )
        return
    rows = [[f.name, "yes" if f.can("convert") else "-", "yes" if f.can("export") else "-", f.plugin, f.description[:60]] for f in found]
    _table(rows, ["FORMAT", "CONVERT", "EXPORT", "PLUGIN", "DESCRIPTION"])
