"""Issue 22 end to end, as a red team would: the installed ``latentzoo`` in fresh processes.

Each case runs ``latentzoo ARGS`` (the console script on PATH, or ``python -m latentzoo``) in a
scratch folder with its own XDG config and cache, under an address-space cap (4 GiB) and a
timeout. A refusal must be one ``error:`` line naming the thing (the fragments), a non-zero
exit, no traceback, not the catch-all ``(run with --debug ...)``, and leave the scratch folder
as it was; an accepted case must exit 0 (and print its warning, where one is expected).

    python tools/redteam22.py            # every case; one PASS/FAIL line each, a summary last
    python tools/redteam22.py -k nrow    # the cases whose id contains "nrow"
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAP = 4 << 30
CATCH_ALL = "(run with --debug for the traceback)"


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def latentzoo() -> list[str]:
    found = shutil.which("latentzoo")
    return [found] if found else [sys.executable, "-m", "latentzoo"]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("cache"):
            continue
        info = path.lstat()
        out[rel] = (0, 0) if path.is_dir() and not path.is_symlink() else (info.st_size, info.st_mtime_ns)
    return out


def setup(tmp: Path) -> None:
    """The hostile inputs, made once."""
    import numpy as np
    import torch
    from PIL import Image

    from latentzoo.plugins.datasets.digits import load

    (tmp / "config" / "latentzoo").mkdir(parents=True)
    (tmp / "cache").mkdir()
    digit = load("test").images[0][0].numpy()
    grey = ((digit + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp / "digit.png")
    Image.fromarray(((digit + 1) * 32767.5).round().astype(np.uint16)).save(tmp / "digit16.png")  # I;16
    Image.fromarray((np.full((32, 32), 0.31 * 65535)).astype(np.uint16)).save(tmp / "mask16.png")  # keep everywhere
    os.mkfifo(tmp / "fifo")
    with open(tmp / "big.txt", "wb") as f:
        f.truncate(4 << 30)  # sparse: 4 GiB on paper
    (tmp / "long.txt").write_text("a seven " * (1 << 17) + "\n")  # one 1 MiB line (a 20 MiB file is over the size cap)
    (tmp / "loop").symlink_to(tmp / "loop")
    zeros = "'" + "0" * 64 + "'"
    klvae = "components:\n  {n}: {{class: vae.autoencoder, roles: [encoder, decoder], weights: {{path: {p}, sha256: {s}}}}}\n"
    (tmp / "w-loop.yaml").write_text(klvae.format(n="wloop", p="loop", s=zeros))
    (tmp / "w-int.yaml").write_text(klvae.format(n="wint", p="5", s=zeros))
    (tmp / "w-sha.yaml").write_text(klvae.format(n="wsha", p="w", s="12345"))
    for name, body in {
        "role-painter": "x: {class: diffusion.ddim, roles: [painter]}",
        "role-none": "x: {class: diffusion.ddim, roles: []}",
        "name-empty": "'': {class: diffusion.ddim, roles: [sampler]}",
        "name-dotdot": "../x: {class: diffusion.ddim, roles: [sampler]}",
        "name-int": "123: {class: diffusion.ddim, roles: [sampler]}",
    }.items():
        (tmp / f"{name}.yaml").write_text(f"components:\n  {body}\n")
    for name, config in {
        "layers": {"layers_per_block": 100000},
        "groups": {"norm_num_groups": 0},
        "channels": {"block_out_channels": [32, -64]},
        "size": {"sample_size": 1e9},
    }.items():
        (tmp / f"cfg-{name}").mkdir()
        (tmp / f"cfg-{name}" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "in_channels": 3, **config}))
    (tmp / "cfg-deep").mkdir()
    (tmp / "cfg-deep" / "config.json").write_text("[" * 100000 + "]" * 100000)
    # latents of the wrong dtype / shape (digits-klvae's space), and weights whose header claims 2^62 bytes
    import yaml

    import latentzoo
    from latentzoo.core.contract.registry import Registry
    from latentzoo.core.contract.weights import save_tensors, sha256_file

    meta = {"latent_space": json.dumps(Registry.load().get("digits-klvae").latent_space.to_dict())}
    z = torch.randn(1, 3, 8, 8)
    save_tensors(tmp / "z-fp16.safetensors", {"latents": z.half()}, metadata=meta)
    save_tensors(tmp / "z-int64.safetensors", {"latents": z.long()}, metadata=meta)
    save_tensors(tmp / "z-3d.safetensors", {"latents": z[0]}, metadata=meta)
    klvae_entry = yaml.safe_load((Path(latentzoo.__file__).parent / "registry.yaml").read_text())["components"]["digits-klvae"]
    weights = {"path": str(Path(latentzoo.__file__).parent / klvae_entry["weights"]["path"]), "sha256": klvae_entry["weights"]["sha256"]}
    no_space = {k: v for k, v in klvae_entry.items() if k not in ("latent_space", "aliases")} | {"weights": weights}
    (tmp / "no-space.yaml").write_text(yaml.safe_dump({"components": {"nospace": no_space}}))
    (tmp / "w-huge.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}" + b"\0" * 64)
    (tmp / "w-huge.yaml").write_text(klvae.format(n="whuge", p="w-huge.safetensors", s=sha256_file(tmp / "w-huge.safetensors")))


E, OK, USAGE = "error", "ok", "usage"  # usage: click's own refusal of a flag's type (exit 2, it names the flag)
# (id, issue item, argv with {t} for the scratch folder, expected, fragments of the error or warning line)
CASES = [
    ("alias-user-entry-skipped", 1, ["list"], OK, ["warning:", "registry.yaml", "dpmpp_2m"]),
    ("alias-info-other-entry", 1, ["info", "keeper"], OK, []),
    ("alias-convert-name", 1, ["convert", "{t}/cfg-layers", "--from", "diffusers", "--name", "dpmpp_2m"], E, ["dpmpp_2m", "alias"]),
    ("alias-registry-remove", 1, ["registry", "remove", "dpmpp_2m"], OK, []),
    ("registry-remove-unknown", 1, ["registry", "remove", "nosuch"], E, ["has no entry 'nosuch'"]),
    ("img-16bit-fit", 2, ["encode", "digits-klvae", "{t}/digit16.png", "--fit", "-o", "{t}/out/z16.safetensors"], OK, []),
    ("mask-16bit-keep", 2, ["inpaint", "digits", "{t}/digit.png", "--mask", "{t}/mask16.png", "-o", "{t}/out/i.png"], E, ["all black"]),
    ("texts-dev-zero", 3, ["classify", "digits-clip", "{t}/digit.png", "--texts-file", "/dev/zero"], E, ["character device"]),
    ("texts-fifo", 3, ["classify", "digits-clip", "{t}/digit.png", "--texts-file", "{t}/fifo"], E, ["FIFO"]),
    ("convert-fifo", 3, ["convert", "{t}/fifo", "--name", "cv"], E, ["FIFO"]),
    ("prompts-4gb", 3, ["sample", "digits-t2i", "--prompts-file", "{t}/big.txt", "-o", "{t}/out/p.png"], E, ["larger than"]),
    ("prompts-20mb-line", 3, ["sample", "digits-t2i", "--prompts-file", "{t}/long.txt", "-o", "{t}/out/p.png"], E, ["longer than"]),
    ("frames-1e5", 4, ["interpolate", "digits", "{t}/digit.png", "{t}/digit.png", "--frames", "100000"], E, ["--frames", "at most"]),
    ("frames-1e9-text", 4, ["interpolate", "digits", "{t}/digit.png", "{t}/digit.png", "--frames", "1e9"], USAGE, ["'--frames'"]),
    ("n-1e9-text", 4, ["sample", "digits", "-n", "1e9"], USAGE, ["'-n'"]),
    ("sample-n-1e9-grid", 4, ["sample", "digits", "-n", str(10**9), "-o", "{t}/out/g.png"], E, ["pixel limit", "-o DIR/"]),
    ("nrow-1e9", 4, ["sample", "digits", "-n", "4", "--nrow", str(10**9), "-o", "{t}/out/g.png"], E, ["--nrow", "from 1 to 4"]),
    ("nrow-1e6-n-1e6", 4, ["sample", "digits", "-n", str(10**6), "--nrow", str(10**6), "-o", "{t}/out/g.png"], E, ["pixel limit"]),
    ("nrow-over-n", 4, ["sample", "digits", "-n", "4", "--nrow", "5", "-o", "{t}/out/g.png"], E, ["--nrow 5 is more than"]),
    ("nrow-dir", 4, ["sample", "digits", "-n", "4", "--nrow", "2", "-o", "{t}/out/d/"], E, ["drop --nrow"]),
    ("variations-n-1e9", 4, ["variations", "digits-unclip", "{t}/digit.png", "-n", str(10**9)], E, ["-n", "at most"]),
    ("candidates-1025", 4, ["sample", "digits-dalle", "--candidates", "1025", "--prompt", "a seven"], E, ["--candidates", "1024"]),
    ("batch-size-0-edit", 4, ["interpolate", "digits", "{t}/digit.png", "{t}/digit.png", "--batch-size", "0"], E, ["--batch-size"]),
    ("config-layers", 4, ["convert", "{t}/cfg-layers", "--from", "diffusers", "--name", "cv"], E, ["layers_per_block", "from 1 to"]),
    ("config-groups", 10, ["convert", "{t}/cfg-groups", "--from", "diffusers", "--name", "cv"], E, ["norm_num_groups"]),
    ("config-channels", 10, ["convert", "{t}/cfg-channels", "--from", "diffusers", "--name", "cv"], E, ["block_out_channels"]),
    ("config-size", 6, ["convert", "{t}/cfg-size", "--from", "diffusers", "--name", "cv"], E, ["sample_size"]),
    ("config-deep", 10, ["convert", "{t}/cfg-deep", "--from", "diffusers", "--name", "cv"], E, ["nested too deeply"]),
    ("jpg", 8, ["sample", "digits", "-n", "1", "-o", "{t}/out/x.jpg"], E, ["writes PNG"]),
    ("steps-on-ar", 8, ["sample", "digits-vqgan-ar", "-n", "1", "--steps", "5", "-o", "{t}/out/x.png"], E, ["takes no steps"]),
    ("set-dot-eta", 8, ["sample", "digits", "-n", "1", "--set", ".eta=0.5", "-o", "{t}/out/x.png"], E, ["empty part"]),
    ("set-eta-1e308", 8, ["sample", "digits", "-n", "1", "--set", "eta=1e308", "-o", "{t}/out/x.png"], E, ["eta", "within"]),
    ("role-painter", 8, ["--registry", "{t}/role-painter.yaml", "list"], E, ["role-painter.yaml:2", "painter"]),
    ("role-none", 8, ["--registry", "{t}/role-none.yaml", "list"], E, ["role-none.yaml:2"]),
    ("name-empty", 8, ["--registry", "{t}/name-empty.yaml", "list"], E, ["name-empty.yaml:2"]),
    ("name-dotdot", 8, ["--registry", "{t}/name-dotdot.yaml", "list"], E, ["'../x' is not a usable name"]),
    ("name-int", 8, ["--registry", "{t}/name-int.yaml", "list"], E, ["123 is not a usable name"]),
    ("labels-duplicate", 8, ["classify", "digits-clip", "{t}/digit.png", "--labels", "a one", "--labels", "a one"], E, ["more than once"]),
    ("shadow-sample-warning", 8, ["sample", "digits", "-n", "1", "--steps", "1", "-o", "{t}/out/s.png"], OK, ["shadows builtin"]),
    ("decode-fp16", 10, ["decode", "digits-klvae", "{t}/z-fp16.safetensors", "-o", "{t}/out/d.png"], OK, []),
    ("decode-int64", 10, ["decode", "digits-klvae", "{t}/z-int64.safetensors", "-o", "{t}/out/d.png"], E, ["int64 latents"]),
    ("decode-3d", 10, ["decode", "digits-klvae", "{t}/z-3d.safetensors", "-o", "{t}/out/d.png"], E, ["shape (3, 8, 8)"]),
    (
        "weights-header-2-62",
        10,
        ["--registry", "{t}/w-huge.yaml", "encode", "whuge", "{t}/digit.png", "--fit", "-o", "{t}/out/z"],
        E,
        ["not a readable safetensors"],
    ),
    ("prompt-not-utf8", 10, ["sample", "digits-t2i", "--prompt", "a \udcff seven", "-n", "1", "-o", "{t}/out/x.png"], E, ["UTF-8"]),
    ("export-proc", 10, ["export", "digits-vqgan", "--to", "diffusers", "-o", "/proc/x"], E, ["cannot write /proc/"]),
    (
        "weights-loop",
        10,
        ["--registry", "{t}/w-loop.yaml", "encode", "wloop", "{t}/digit.png", "--fit", "-o", "{t}/out/z"],
        E,
        ["is a symlink loop"],
    ),
    (
        "encoder-no-latent-space",
        10,
        ["--registry", "{t}/no-space.yaml", "encode", "nospace", "{t}/digit.png", "-o", "{t}/out/z"],
        E,
        ["states no latent_space"],
    ),
    ("weights-path-5", 10, ["--registry", "{t}/w-int.yaml", "list"], E, ["weights.path", "not 5"]),
    ("weights-sha-12345", 10, ["--registry", "{t}/w-sha.yaml", "list"], E, ["weights.sha256", "12345"]),
]


# The user registry a case runs with, by the start of its id (none for the others).
USER_FILES = {
    "alias-": "components:\n  dpmpp_2m:\n    class: diffusion.ddim\n    roles: [sampler]\n"
    "  keeper:\n    class: diffusion.ddim\n    roles: [sampler]\n",
    "shadow-": "components:\n  ddim:\n    class: diffusion.ddim\n    roles: [sampler]\n",
}


def user_file(tmp: Path, case_id: str) -> None:
    path = tmp / "config" / "latentzoo" / "registry.yaml"
    text = next((t for prefix, t in USER_FILES.items() if case_id.startswith(prefix)), None)
    if text is None:
        path.unlink(missing_ok=True)
    elif not path.exists() or path.read_text() != text:
        path.write_text(text)


def run_case(cmd: list[str], argv: list[str], tmp: Path, timeout: float) -> tuple[int, str, str, float]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache"), "HF_HUB_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("LATENTZOO_") or k == "LATENTZOO_PLUGIN_IMPORT_BUDGET"}
    start = time.monotonic()
    args = [a.encode("utf-8", "surrogateescape") for a in [*cmd, *argv]]
    try:
        proc = subprocess.run(args, cwd=tmp, env=env, capture_output=True, timeout=timeout, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        return -1, "", "HANG (timeout)", time.monotonic() - start
    err = proc.stderr.decode("utf-8", "replace")
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), err, time.monotonic() - start


def judge(expected: str, fragments: list[str], rc: int, err: str, changed: bool) -> str | None:
    lines = [line for line in err.splitlines() if line.strip()]
    if "Traceback" in err or CATCH_ALL in err:
        return "traceback or catch-all"
    if rc == -1:
        return "hang"
    if expected == USAGE:
        missing = [f for f in fragments if f not in err]
        return None if rc == 2 and "Error: Invalid value for" in err and not missing and not changed else f"rc {rc}, {missing}"
    if expected == E:
        if rc == 0:
            return "exit 0"
        if len(lines) != 1 or not lines[0].startswith("error: "):
            return f"{len(lines)} stderr lines"
        if changed:
            return "the scratch folder changed"
        missing = [f for f in fragments if f not in lines[0]]
        return f"missing {missing}" if missing else None
    if rc != 0:
        return f"exit {rc}"
    missing = [f for f in fragments if f not in err]
    return f"missing {missing}" if missing else None


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LATENTZOO_")}
    return {**env, "XDG_CONFIG_HOME": str(tmp / "config"), "XDG_CACHE_HOME": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", **extra}


def _start(cmd: list[str], argv: list[str], tmp: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*cmd, *argv], cwd=tmp, env=_env(tmp, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def two_writers(cmd: list[str], tmp: Path) -> str | None:
    """Item 5: two exports to one folder at once: one succeeds, the other is refused in one line; the export is whole."""
    argv = ["export", "digits-vqgan", "--to", "diffusers", "-o", str(tmp / "out" / "ex")]
    procs = [_start(cmd, argv, tmp) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    loser = next((err for rc, err in results if rc != 0), "")
    if codes != [0, 1] or len(loser.strip().splitlines()) != 1 or "pid" not in loser:
        return f"exit codes {codes}, loser said {loser.strip()[:200]!r}"
    if not (tmp / "out" / "ex" / ".latentzoo-export.json").exists():
        return "the winning export is not complete"
    return None


def sigterm_mid_sample(cmd: list[str], tmp: Path) -> str | None:
    """Item 7: SIGTERM during sample -o DIR/ leaves no temporaries, only finished verified batches; --resume completes."""
    out = tmp / "out" / "s"
    argv = ["sample", "digits", "-n", "96", "--batch-size", "8", "--steps", "20", "--no-progress", "-o", f"{out}/"]
    proc = _start(cmd, argv, tmp)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list(out.glob(".latentzoo-partial/*.png"))) < 8 and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    left = sorted(p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".bak")) or "staging" in p.name)
    if rc != 143 or left:
        return f"exit {rc}, temporaries left: {left}"
    resumed = subprocess.run([*cmd, *argv, "--resume"], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=600)
    files = json.loads((out / "samples.json").read_text())["files"] if (out / "samples.json").exists() else []
    if resumed.returncode != 0 or len(files) != 96 or (out / ".latentzoo-partial").exists():
        return f"--resume: exit {resumed.returncode}, {len(files)} files; {resumed.stderr.strip()[-200:]}"
    return None


def full_disk(cmd: list[str], tmp: Path) -> str | None:
    """Item 7: EFBIG (RLIMIT_FSIZE, as a full disk) during export, encode and sample: one line naming the path, nothing left."""
    (tmp / "out").mkdir(exist_ok=True)
    (tmp / "out" / "x.png").write_bytes(b"an earlier output")

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    for argv in (
        ["export", "digits-vqgan", "--to", "diffusers", "-o", str(tmp / "out" / "ex")],
        ["encode", "digits-klvae", str(tmp / "digit.png"), "--fit", "-o", str(tmp / "out" / "z.safetensors")],
        ["sample", "digits", "-n", "4", "--steps", "1", "--no-progress", "-o", str(tmp / "out" / "x.png")],
    ):
        before = snapshot(tmp)
        proc = subprocess.run([*cmd, *argv], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=300, preexec_fn=small_files)
        lines = proc.stderr.strip().splitlines()
        if proc.returncode == 0 or len(lines) != 1 or "File too large" not in lines[0] or snapshot(tmp) != before:
            return f"{argv[0]}: exit {proc.returncode}, {proc.stderr.strip()[:200]!r}"
    return None


def plugins(cmd: list[str], tmp: Path) -> str | None:
    """Item 9: a plugin that calls os._exit at import, and one that sleeps 30 s at import: every command still works."""
    site = tmp / "site"
    for name, body in (("exiter", "import os\nos._exit(3)\n"), ("sleeper", "import time\ntime.sleep(30)\n")):
        (site / f"lz_{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (site / f"lz_{name}.py").write_text(body)
        info = site / f"lz_{name}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lz-{name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[latentzoo]\n{name} = lz_{name}\n")
    env = _env(tmp, PYTHONPATH=str(site))
    start = time.monotonic()
    proc = subprocess.run([*cmd, "list"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start  # the default budget: 10 s
    report = subprocess.run([*cmd, "plugins", "--json"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    shutil.rmtree(site)
    err = proc.stderr
    if proc.returncode != 0 or "digits" not in proc.stdout or "plugins --check" not in err or took > 25:
        return f"list: exit {proc.returncode} in {took:.0f}s: {err.strip()[:300]!r}"
    rows = {r["name"]: r for r in json.loads(report.stdout or "[]")} if report.returncode == 0 else {}
    exiter = rows.get("exiter", {})
    if exiter.get("status") != "broken" or "os._exit(3)" not in (exiter.get("error") or ""):
        return f"plugins: exit {report.returncode}, exiter {exiter}"
    return None


def constant_output(cmd: list[str], tmp: Path) -> str | None:
    """Item 8: an all-zero decoder writes its (blank) output with one warning that the output is constant."""
    import torch
    import yaml

    from latentzoo.core.contract.weights import load_tensors, save_tensors

    builtin = yaml.safe_load((Path(__import__("latentzoo").__file__).parent / "registry.yaml").read_text())
    entry = dict(builtin["components"]["digits-klvae"])
    weights = Path(__import__("latentzoo").__file__).parent / entry["weights"]["path"]
    zero = {k: torch.zeros_like(v) for k, v in load_tensors(weights).items()}
    sha = save_tensors(tmp / "zero.safetensors", zero)
    entry.update(weights={"path": str(tmp / "zero.safetensors"), "sha256": sha})
    entry.pop("aliases", None)
    entry["latent_space"] = {**entry["latent_space"], "autoencoder": f"sha256:{sha[:16]}"}  # another model: another identity
    (tmp / "zero.yaml").write_text(yaml.safe_dump({"components": {"zerovae": entry}}))
    latents = str(tmp / "z-fp16.safetensors")  # digits-klvae's latents; the zero model is another identity: --allow-mismatch
    argv = ["--registry", str(tmp / "zero.yaml"), "decode", "zerovae", latents, "--allow-mismatch", "-o", str(tmp / "out" / "d.png")]
    proc = subprocess.run([*cmd, *argv], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 or "output is constant" not in proc.stderr:
        return f"exit {proc.returncode}: {proc.stderr.strip()[:300]!r}"
    return None


def nan_convert(cmd: list[str], tmp: Path) -> str | None:
    """Item 6: a diffusers VAE with a NaN weight is refused before anything is registered."""
    try:
        import diffusers
        import torch
    except ImportError:
        return None
    vae = diffusers.AutoencoderKL(block_out_channels=[8], layers_per_block=1, latent_channels=2, norm_num_groups=8, sample_size=16)
    with torch.no_grad():
        vae.encoder.conv_in.weight[0, 0, 0, 0] = float("nan")
    vae.save_pretrained(tmp / "nanvae", safe_serialization=True)
    before = snapshot(tmp)
    argv = [
        "convert",
        str(tmp / "nanvae"),
        "--from",
        "diffusers",
        "--name",
        "nanvae",
        "--scaling-factor",
        "0.5",
        "-o",
        str(tmp / "out" / "cv"),
    ]
    proc = subprocess.run([*cmd, *argv], cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    if proc.returncode == 0 or len(lines) != 1 or "NaN" not in lines[0] or snapshot(tmp) != before:
        return f"exit {proc.returncode}: {proc.stderr.strip()[:300]!r}"
    return None


PROCESS_CASES = [
    ("two-writers", 5, two_writers),
    ("sigterm-mid-sample", 7, sigterm_mid_sample),
    ("full-disk", 7, full_disk),
    ("plugin-exit-and-slow", 9, plugins),
    ("constant-output", 8, constant_output),
    ("nan-convert", 6, nan_convert),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only the cases whose id contains this")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    cmd = latentzoo()
    failed = 0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        setup(tmp)
        for case_id, item, argv, expected, fragments in CASES:
            if args.k not in case_id:
                continue
            user_file(tmp, case_id)
            before = snapshot(tmp)
            rc, _, err, took = run_case(cmd, [a.replace("{t}", name) for a in argv], tmp, args.timeout)
            after = snapshot(tmp)
            changed = {k: v for k, v in after.items() if not k.startswith("out")} != {
                k: v for k, v in before.items() if not k.startswith("out")
            } or (expected == E and after != before)
            problem = judge(expected, fragments, rc, err, changed)
            failed += problem is not None
            first = next((line for line in err.splitlines() if line.strip()), "")
            verdict = "PASS" if problem is None else f"FAIL ({problem})"
            print(f"{verdict:<6} item {item:>2} {case_id:<24} rc={rc:<3} {took:5.1f}s  {first[:150]}", flush=True)
            shutil.rmtree(tmp / "out", ignore_errors=True)
        for case_id, item, check in PROCESS_CASES:
            if args.k not in case_id:
                continue
            user_file(tmp, case_id)
            start = time.monotonic()
            try:
                problem = check(cmd, tmp)
            except Exception as exc:  # the check itself broke: a failure to look at
                problem = f"{type(exc).__name__}: {exc}"
            failed += problem is not None
            verdict = "PASS" if problem is None else f"FAIL ({problem})"
            print(f"{verdict:<6} item {item:>2} {case_id:<24} {time.monotonic() - start:5.1f}s", flush=True)
            shutil.rmtree(tmp / "out", ignore_errors=True)
    print(f"{'PASS' if not failed else 'FAIL'}: {failed} of the cases failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
