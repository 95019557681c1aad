"""The ``digits-hollow`` LoRA's data and its measures: outline ("hollow") digits, how hollow samples are, and which digit they show.

    python tools/digits_hollow.py data OUT_DIR [--n 300]     # OUT_DIR/0000.png + 0000.txt ("a hollow seven"), ...
    python tools/digits_hollow.py join RUN_PRIOR RUN_DECODER -o weights/digits-hollow.safetensors
    python tools/digits_hollow.py calibrate                  # the measures on digits[test], solid and hollow
    python tools/digits_hollow.py evaluate - digits-hollow --n 20 -o docs/hollow-grid.png
    python tools/digits_hollow.py measure DIR ...            # hollowness of one-PNG-per-sample folders
    python tools/digits_hollow.py blind A-1.0.pt [B-1.0.pt] GRIDS/ --key KEY.json   # shuffled grids to read by eye
    python tools/digits_hollow.py score KEY.json ANSWERS.txt # what the blind reader read as prompted

Data (``make``): digits[train] at 32x32 (the base's images): among those whose region (upscaled
intensity above DATA_LEVEL) is one piece with its digit's loops (``curated``), the 30 of each
digit closest to their digit's mean image (``typical``);
a digit's outline (``outline``) is the BAND-pixel ring along the inside of its region (the frame
counts as outside, so a digit touching the frame keeps a closed ring): bright ring, dark centre;
captioned "a hollow <digit name>".

Measure (``hollowness``): the region a digit covers is its bright pixels closed (dilate then
erode, which fills an outline's inside); its *stroke centres* are that region eroded twice.
Hollowness is the fraction of stroke-centre pixels that are dark; a sample is "hollow" above
HOLLOW. Its false positives are solid digits with loops (0, 6, 8, 9: the closing fills a loop as
it fills an outline). ``calibrate`` gives its rates on digits[test].

``read`` asks a reader of solid *and* hollow digits which digit an image shows, or that it shows
none (``reader``: a small CNN fit at first use, deterministically, on digits[train] solid and
outlined, with an 11th class for garbled images). The shipped digits classifier
(``read_classifier``) was never shown an outline and reads the hollow recipe itself poorly.
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def dilate(mask: torch.Tensor, n: int = 1) -> torch.Tensor:
    for _ in range(n):
        mask = F.max_pool2d(mask.float(), 3, 1, 1)
    return mask > 0.5


def erode(mask: torch.Tensor, n: int = 1) -> torch.Tensor:
    return ~dilate(~mask, n)


LEVEL, BAND = -0.4, 2  # the digit's region: its upscaled intensity above LEVEL; the outline: BAND pixels wide


def erode_in_frame(mask: torch.Tensor, n: int = 1) -> torch.Tensor:
    """Erosion that counts outside the image as background, so a region touching the frame (the
    digits fill their 32x32 frame top to bottom) still gets an outline along the frame."""
    outside = F.pad((~mask).float(), (n, n, n, n), value=1.0)
    return F.max_pool2d(outside, 2 * n + 1, 1, 0) < 0.5


def outline(images: torch.Tensor, level: float = LEVEL, band: int = BAND) -> torch.Tensor:
    """(N, 1, H, W) digits in [-1, 1] -> hollow digits in [-1, 1]: bright on a BAND-pixel ring along the
    inside of the digit's region (intensity > LEVEL), dark inside the ring and outside the region.
    The 8x8 digits' strokes, upscaled to 32x32, are 5-8 pixels wide at LEVEL, so a 2-pixel ring
    leaves a dark centre 1-4 pixels wide. (An earlier recipe, the iso-band -0.3 < intensity < 0.6,
    broke into squiggles where the stroke's brightness varies, and left the rings open where a
    digit touches the frame: 3s and 7s became unreadable.)"""
    region = images > level
    return (region & ~erode_in_frame(region, band)).float().mul(2).sub(1)


CLOSE, CENTRE, HOLLOW = 4, 2, 0.3  # closing radius, erosion to stroke centres, hollowness of a "hollow" sample


def regions(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(covered region: bright pixels closed by CLOSE, stroke centres: that region eroded by CENTRE)."""
    bright = images > 0.0
    region = erode(dilate(bright, CLOSE), CLOSE) | bright
    return region, erode(region, CENTRE)


def hollowness(images: torch.Tensor) -> torch.Tensor:
    """Per image: the fraction of stroke-centre pixels that are dark (see the module docstring)."""
    _, centre = regions(images)
    dark = (images <= 0.0) & centre
    return dark.flatten(1).sum(1).float() / centre.flatten(1).sum(1).clamp(min=1).float()


def augment(images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light augmentation for the reader: shifts of up to 2 pixels, a blur of random strength (samples
    come out of a decoder, softer than the recipe's hard rings), contrast and brightness jitter, noise."""
    n = len(images)
    dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()  # one shift per batch: cheap, and enough
    x = torch.roll(F.pad(images, (2, 2, 2, 2), value=-1.0), (dy, dx), (2, 3))[:, :, 2:-2, 2:-2]
    blur = torch.rand(n, 1, 1, 1, generator=g) * 0.6  # mix with a 3x3 box blur
    x = x * (1 - blur) + F.avg_pool2d(F.pad(x, (1, 1, 1, 1), value=-1.0), 3, 1) * blur
    scale = 0.7 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    return ((x + 1) * scale - 1 + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def variants(images: torch.Tensor) -> torch.Tensor:
    """Each image solid, hollow at several ring widths and region levels (the recipe's, thinner and
    thicker, and so wide that only a slit is left dark), and half hollow (the mean of solid and
    hollow: what a LoRA at half strength draws), so the reader reads a digit's shape, not its fill."""
    rings = [outline(images, level, band) for level, band in ((LEVEL, BAND), (LEVEL, 1), (-0.6, 3), (-0.2, 2), (LEVEL, 3))]
    return torch.cat([images, *rings, (images + rings[0]) / 2])  # the last: half hollow, as at strength 0.5


def smooth_noise(shape: tuple[int, ...], g: torch.Generator, width: int = 5) -> torch.Tensor:
    """Gaussian-like random field (two box blurs of white noise), unit variance per image."""
    x = torch.randn(shape, generator=g)
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (width // 2,) * 4, mode="circular"), width, 1)
    return x / x.flatten(1).std(1).view(-1, 1, 1, 1)


def garbled(images: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Negatives for the reader's 11th class, "no digit": what a bad sample looks like. Three kinds,
    each hollow or solid: two different digits overlaid (shifted), a digit's region filled with random
    worm-like strokes (the level sets of a smooth random field), and a digit warped beyond reading
    (a smooth random displacement of about 4 pixels)."""
    n = len(images)
    half = (torch.rand(n, generator=g) < 0.5).view(-1, 1, 1, 1)
    some = torch.where(half, outline(images), images)  # half of them hollow
    other = torch.randperm(n, generator=g)
    other = torch.where(labels[other] == labels, other.roll(1), other)
    shift = torch.randint(-4, 5, (2,), generator=g).tolist()
    overlay = torch.maximum(some, torch.roll(some[other], shift, (2, 3)))
    field = smooth_noise(images.shape, g, 7)
    worms = ((field.abs() < 0.5) & dilate(images > LEVEL, 1)).float().mul(2).sub(1)
    flow = torch.cat([smooth_noise(images.shape, g, 7), smooth_noise(images.shape, g, 7)], 1).permute(0, 2, 3, 1)
    base = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), list(images.shape), align_corners=False)
    warped = F.grid_sample(some, base + flow * (4 / 16), padding_mode="border", align_corners=False)
    return torch.cat([overlay, worms, warped])


READER_SEED, READER_EPOCHS, GARBLED = 0, 12, 10  # GARBLED: the reader's "no digit" class


@lru_cache(maxsize=1)
def reader() -> torch.nn.Module:
    """A reader of solid and hollow digits: a small CNN (27k parameters) fit at first use,
    deterministically (seeded, one thread, about 1 CPU-minute), on digits[train], each digit solid
    and outlined at five ring widths / region levels and half hollow (``variants``), lightly augmented
    (``augment``), plus an 11th class GARBLED for images that show no digit (``garbled``): without
    it any reader must name *some* digit, and a sample conditioned on "seven" has a seven's rough
    layout even when a person cannot read it. Why not the others: the shipped digits classifier
    was trained on solid digits only and reads the hollow recipe about 60 % of the time; an RBF
    SVM on 8x8 cell means (used before) read garbled samples as their prompt."""
    with torch.enable_grad():
        return _fit_reader()


def _fit_reader() -> torch.nn.Module:
    from torch import nn

    from latentzoo.plugins.datasets.digits import load

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fit's bytes do not depend on the machine's thread count
    try:
        torch.manual_seed(READER_SEED)
        g = torch.Generator().manual_seed(READER_SEED)
        data = load("train", 32, 1)
        x = variants(data.images)
        y = data.labels.repeat(len(x) // len(data.labels))
        bad = garbled(data.images, data.labels, g)
        x, y = torch.cat([x, bad]), torch.cat([y, torch.full((len(bad),), GARBLED)])
        net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4: where each stroke is
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(768, 11),
        )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        steps = READER_EPOCHS * (len(x) // 64)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        net.train()
        for _ in range(READER_EPOCHS):
            order = torch.randperm(len(x), generator=g)
            for i in range(len(x) // 64):
                idx = order[i * 64 : (i + 1) * 64]
                loss = F.cross_entropy(net(augment(x[idx], g)), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        return net.eval()
    finally:
        torch.set_num_threads(threads)


def read(images: torch.Tensor) -> torch.Tensor:
    """The digit each image shows, solid or hollow (see ``reader``)."""
    net = reader()
    with torch.no_grad():
        return net(images.float().clamp(-1, 1)).argmax(1)


# The loops each digit's region has when its outline reads as that digit: an outline draws the
# region's boundary, holes included, so an eight whose loops filled in (most of the 8x8 eights at
# LEVEL) outlines as a box with dots, and a seven with a blot in its corner grows a stray loop.
# Fours: the open-topped kind (three in four); a LoRA taught both kinds blended them.
LOOPS = torch.tensor([1, 0, 0, 0, 0, 0, 1, 0, 2, 1])  # indexed by digit
DATA_LEVEL = -0.3  # the data's region level: thinner strokes than LEVEL keep more eights' two loops


def components(mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool -> the number of 8-connected components of each mask (labels spread by max
    pooling until they settle: fine at 32x32)."""
    n, _, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, dtype=torch.float32).view(1, 1, h, w).expand(n, 1, h, w)
    labels = torch.where(mask, ids, 0.0)
    while True:
        spread = torch.where(mask, F.max_pool2d(labels, 3, 1, 1), 0.0)
        if torch.equal(spread, labels):
            return torch.tensor([len(torch.unique(one[one > 0])) for one in labels])
        labels = spread


def loops(region: torch.Tensor) -> torch.Tensor:
    """The number of holes in each region: background components not connected to the frame.
    Both are 8-connected, so a loop closed only by diagonal steps is not counted (the upscaled
    digits' regions are smooth: their loops are closed by runs of pixels)."""
    background = F.pad(~region, (1, 1, 1, 1), value=True)  # one component around the frame
    return components(background) - 1


def curated(images: torch.Tensor, labels: torch.Tensor, level: float = DATA_LEVEL) -> torch.Tensor:
    """Which digits outline well at ``level``: one connected region with the loops of its digit
    (``LOOPS``). On digits[train] at -0.3 this keeps 34 % of the eights, 65 % of the nines,
    73 % of the sixes, 75 % of the fours (the open-topped kind only: a LoRA taught both blended
    them) and 91-99 % of the others."""
    region = images > level
    return (loops(region) == LOOPS[labels]) & (components(region) == 1)


def typical(images: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` images closest (squared distance) to their mean: a digit's clearest, commonest
    shape first, its hooks, crossbars and feet last."""
    distance = (images - images.mean(0, keepdim=True)).flatten(1).pow(2).sum(1)
    return torch.argsort(distance)[:n]


def make(out: Path, n: int = 300) -> None:
    """``n`` hollow digits, as many of each digit: of the curated digits[train], the most typical
    (``typical``), in a seeded order."""
    from PIL import Image

    from latentzoo.plugins.datasets.digits import load

    data = load("train", 32, 1)
    keep = curated(data.images, data.labels)
    pick = []
    for digit in range(10):
        ok = (keep & (data.labels == digit)).nonzero()[:, 0]
        pick.append(ok[typical(data.images[ok], n // 10)])
    pick = torch.cat(pick)
    pick = pick[torch.randperm(len(pick), generator=torch.Generator().manual_seed(1))]  # the shipped LoRA's file order
    hollow = outline(data.images[pick], DATA_LEVEL)
    out.mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(hollow, data.labels[pick], strict=True)):
        array = img[0].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(array, mode="L").save(out / f"{i:04d}.png")
        (out / f"{i:04d}.txt").write_text(f"a hollow {NAMES[int(label)]}\n")


def join(runs: list[Path], out: Path) -> str:
    """Join the parts' kohya files (``train lora`` run directories, one part each) into one file, the
    (down, up) pairs in fp16 (half the bytes; applying computes in fp32), alphas as trained."""
    from safetensors.torch import load_file

    from latentzoo.core.contract.weights import save_tensors

    state: dict[str, torch.Tensor] = {}
    for run in runs:
        for key, value in load_file(str(run / "model.safetensors")).items():
            if key in state:
                raise SystemExit(f"{run}: {key} is in two runs; join runs of different parts")
            state[key] = value if key.endswith(".alpha") else value.half()
    sha = save_tensors(out, state, metadata={"format": "kohya"})
    print(f"{out}: {len(state)} tensors, {out.stat().st_size} bytes, sha256 {sha}")
    return sha


def load_pngs(paths: list[Path]) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("L"), dtype=np.float32) for p in paths]
    return torch.from_numpy(np.stack(arrays))[:, None] / 127.5 - 1


def evaluate(
    registry: Path | None,
    name: str,
    n: int,
    strengths: list[float],
    out: Path | None,
    seed: int = 0,
    per: int = 4,
    samples: Path | None = None,
) -> list[dict[str, Any]]:
    """Sample "a hollow <digit>" for every digit at each LoRA strength; hollowness and digit read per strength.
    ``name`` may list several adapters (``a,b``), all applied at the strength."""
    import latentzoo
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    rows, grids = [], []
    for s in strengths:
        extra = [registry] if registry else []
        pipe = latentzoo.load_pipeline("digits-t2i", extra=extra)
        if s:
            latentzoo.apply_loras(pipe, [f"{one}:{s}" for one in name.split(",")], extra=extra)
        images, labels = [], []
        for digit, word in enumerate(NAMES):
            images.append(pipe.sample(n, seed=seed, options={"prompt": f"a hollow {word}"}))
            labels += [digit] * n
        x, y = torch.cat(images), torch.tensor(labels)
        h, r = hollowness(x), read(x)
        row = {
            "strength": s,
            "hollowness": round(float(h.mean()), 4),
            "hollow_fraction": round(float((h > HOLLOW).float().mean()), 4),
            "read": round(float((r == y).float().mean()), 4),
            "read_garbled": round(float((r == GARBLED).float().mean()), 4),
            "read_classifier": round(float((predicted_labels(x) == y).float().mean()), 4),
            "per_digit_hollow": [round(float((h[y == k] > HOLLOW).float().mean()), 2) for k in range(10)],
            "per_digit_read": [round(float((r[y == k] == k).float().mean()), 2) for k in range(10)],
        }
        print(row, flush=True)
        rows.append(row)
        if samples is not None:
            torch.save(x, samples.with_name(f"{samples.stem}-{s}.pt"))
        grids.append(first_of_each(x, per))
    if out is not None:
        latentzoo.save_grid(torch.cat(grids), out, nrow=10 * per)
    return rows


def first_of_each(x: torch.Tensor, per: int) -> torch.Tensor:
    """The first ``per`` samples of each digit of digit-major samples (10 equal runs, 0 to 9)."""
    n = len(x) // 10
    return torch.cat([x[d * n : d * n + per] for d in range(10)])


def blind(samples: list[Path], out: Path, key: Path, per: int = 10, seed: int = 0) -> None:
    """Read by eye without knowing the prompts: the first ``per`` samples of each digit of each file
    (``evaluate --samples`` files are digit-major), shuffled together (seeded), as grids of 50
    (5 rows of 10, 3x) in ``out``. Several files are read side by side, so one reader's leniency
    counts the same for each. Each cell's digit and file, in reading order, go to ``key`` (kept from
    the reader), who writes one token per cell in the same order: the digit read, or ? where they
    cannot tell."""
    import json

    import latentzoo

    images, digits, sources = [], [], []
    for i, path in enumerate(samples):
        images.append(first_of_each(torch.load(path, weights_only=True), per))
        digits += [d for d in range(10) for _ in range(per)]
        sources += [i] * (10 * per)
    x = torch.cat(images)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).tolist()
    out.mkdir(parents=True, exist_ok=True)
    for k in range(0, len(x), 50):
        grid = F.interpolate(x[order[k : k + 50]], scale_factor=3, mode="nearest")
        latentzoo.save_grid(grid, out / f"grid-{k // 50 + 1}.png", nrow=10)
    cells = {"files": [str(p) for p in samples], "digit": [digits[i] for i in order], "source": [sources[i] for i in order]}
    key.write_text(json.dumps(cells) + "\n")


def score(key: Path, answers: Path) -> list[dict[str, Any]]:
    """A blind reading against its key, per file: read as prompted, unsure (?), misread, read per digit."""
    import json

    cells = json.loads(key.read_text())
    read_as = answers.read_text().split()
    if len(read_as) != len(cells["digit"]):
        raise SystemExit(f"{answers}: {len(read_as)} answers for {len(cells['digit'])} cells")
    rows = []
    for i, name in enumerate(cells["files"]):
        mine = [(a, str(d)) for a, d, s in zip(read_as, cells["digit"], cells["source"], strict=True) if s == i]
        rows.append(
            {
                "file": name,
                "read": sum(a == d for a, d in mine) / len(mine),
                "unsure": sum(a == "?" for a, _ in mine) / len(mine),
                "misread": sum(a not in (d, "?") for a, d in mine) / len(mine),
                "per_digit_read": [
                    sum(a == d for a, d in mine if d == str(k)) / max(1, sum(d == str(k) for _, d in mine)) for k in range(10)
                ],
            }
        )
        print(rows[-1])
    return rows


def calibrate() -> dict[str, float]:
    """The measures on known images, digits[test]: solid, the hollow recipe, and the recipe through
    the digits VQ-GAN without the LoRA (encode + decode: what the base's decoder can draw)."""
    from latentzoo.core.runtime.build import Builder
    from latentzoo.plugins.datasets.digits import load
    from latentzoo.plugins.datasets.evaluate import predicted_labels

    data = load("test", 32, 1)
    builder = Builder.from_registry(())
    encoder, decoder = builder.component("digits-vqgan", "encoder"), builder.component("digits-vqgan", "decoder")
    hollow = outline(data.images)
    with torch.no_grad():
        through = decoder.decode(encoder.encode(hollow))
    out = {}
    for key, x in (("solid", data.images), ("hollow", hollow), ("hollow_vqgan", through)):
        h, r = hollowness(x), read(x)
        out[f"{key}_hollow_fraction"] = round(float((h > HOLLOW).float().mean()), 4)
        out[f"{key}_read"] = round(float((r == data.labels).float().mean()), 4)
        out[f"{key}_read_garbled"] = round(float((r == GARBLED).float().mean()), 4)
        out[f"{key}_read_classifier"] = round(float((predicted_labels(x) == data.labels).float().mean()), 4)
    print(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out", type=Path)
    d.add_argument("--n", type=int, default=300)
    m = sub.add_parser("measure")
    m.add_argument("folders", nargs="+", type=Path)
    m.add_argument("--digit", type=int)
    j = sub.add_parser("join")
    j.add_argument("runs", nargs="+", type=Path)
    j.add_argument("-o", "--out", type=Path, required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("registry", type=Path, help="a registry file naming the adapter(s), or - for the installed ones")
    e.add_argument("name")
    e.add_argument("--n", type=int, default=20)
    e.add_argument("--strengths", default="0,0.25,0.5,0.75,1")
    e.add_argument("--per", type=int, default=4, help="samples per digit in the grid")
    e.add_argument("--samples", type=Path, help="save each strength's samples as SAMPLES-STRENGTH.pt (to look at)")
    e.add_argument("-o", "--out", type=Path, help="a grid: one row per strength, --per samples of each digit")
    b = sub.add_parser("blind")
    b.add_argument("samples", type=Path, nargs="+", help="evaluate --samples files, read side by side")
    b.add_argument("out", type=Path)
    b.add_argument("--key", type=Path, required=True, help="where the cells' digits go (keep it from the reader)")
    b.add_argument("--per", type=int, default=10)
    b.add_argument("--seed", type=int, default=0)
    sc = sub.add_parser("score")
    sc.add_argument("key", type=Path)
    sc.add_argument("answers", type=Path)
    sub.add_parser("calibrate")
    args = parser.parse_args()
    if args.cmd == "calibrate":
        calibrate()
        return
    if args.cmd == "evaluate":
        strengths = [float(v) for v in args.strengths.split(",")]
        registry = None if str(args.registry) == "-" else args.registry
        evaluate(registry, args.name, args.n, strengths, args.out, per=args.per, samples=args.samples)
        return
    if args.cmd == "blind":
        blind(args.samples, args.out, args.key, args.per, args.seed)
        return
    if args.cmd == "score":
        score(args.key, args.answers)
        return
    if args.cmd == "join":
        join(args.runs, args.out)
        return
    if args.cmd == "data":
        make(args.out, args.n)
        return
    for folder in args.folders:
        images = load_pngs(sorted(folder.glob("[0-9]*.png")))
        h = hollowness(images)
        line = f"{folder}: hollowness mean {h.mean():.3f}, hollow (> {HOLLOW}) {float((h > HOLLOW).float().mean()):.3f}"
        if args.digit is not None:
            line += f", read as {args.digit}: {float((read(images) == args.digit).float().mean()):.3f}"
        print(line)


if __name__ == "__main__":
    main()
