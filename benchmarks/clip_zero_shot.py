"""Zero-shot accuracy of a CLIP model on the 360 held-out digits (digits-captions' test split).

    python benchmarks/clip_zero_shot.py                       # the shipped digits-clip
    python benchmarks/clip_zero_shot.py --registry runs/clip/registry.yaml --model clip-clip --json

Digits: each image gets the most probable of ten prompts (``--template``, default "a handwritten
{}", filled with zero ... nine). Attributes: on held-out images whose measured attribute falls in
a word bin (thin / thick, upright / slanted, narrow / wide), whether "a <right word> <digit>"
beats "a <opposite word> <digit>" (the image's own digit), so only the attribute is tested;
chance is 50 %. Also: accuracy with a few other templates, and the confusion of the digits.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

TEMPLATES = ("a handwritten {}", "a {}", "the digit {}", "a photo of the number {}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-clip")
    parser.add_argument("--registry", action="append", default=[], help="extra registry file (e.g. a run's registry.yaml)")
    parser.add_argument("--template", default=TEMPLATES[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import latentzoo
    from latentzoo.plugins.clip.zero_shot import attribute_accuracy, digit_accuracy
    from latentzoo.plugins.datasets.captions import NAMES, load

    t0 = time.perf_counter()
    model = latentzoo.load_scorer(args.model, extra=args.registry)
    held = load("test", size=model.image_size, channels=model.image_channels)
    probs = model.probabilities(held.images, [args.template.format(n) for n in NAMES])
    pred = probs.argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((held.labels, pred), torch.ones(len(pred), dtype=torch.long), accumulate=True)
    report = {
        "model": args.model,
        "held_out_images": len(held),
        "template": args.template,
        "zero_shot_accuracy": round(float((pred == held.labels).float().mean()), 4),
        "other_templates": {t: round(digit_accuracy(model, held.images, held.labels, t), 4) for t in TEMPLATES if t != args.template},
        "attribute_accuracy": {k: round(v, 4) for k, v in attribute_accuracy(model, held).items()},
        "attribute_images": {a: sum(a in w for w in held.words) for a in ("thickness", "slant", "width")},
        "per_class_accuracy": [round(float(confusion[c, c] / confusion[c].sum()), 3) for c in range(10)],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.model}: zero-shot accuracy {report['zero_shot_accuracy']:.1%} on {len(held)} held-out digits ({args.template!r})")
    for t, a in report["other_templates"].items():
        print(f"  template {t!r}: {a:.1%}")
    for a, v in report["attribute_accuracy"].items():
        print(f"  attribute {a}: {v:.1%} on {report['attribute_images'][a]} images (chance 50 %)")
    print("  per class: " + " ".join(f"{c}:{v:.2f}" for c, v in enumerate(report["per_class_accuracy"])))
    print("  confusion (rows: true digit, columns: predicted):")
    for c in range(10):
        print("   " + " ".join(f"{int(v):3d}" for v in confusion[c]))


if __name__ == "__main__":
    main()
