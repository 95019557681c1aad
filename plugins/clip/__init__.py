"""CLIP family (Radford et al. 2021): text and vision transformers in transformers' layout,
contrastive training, zero-shot classification and text-image scores."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "clip.model",
            "roles": ["conditioner"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.model:CLIPModel",
            "trainer": "latentzoo.plugins.clip.train:train",
            "description": "CLIP text + vision towers (transformers CLIPModel layout); conditions on its text tower, scores images against texts",
        },
        {
            "name": "clip.text",
            "roles": ["conditioner"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.model:CLIPTextEncoder",
            "formats": {"diffusers": "latentzoo.plugins.clip.diffusers:CLIPTextFormat"},  # CLIPTextModel (+ CLIPTokenizer)
            "description": "CLIP text transformer (transformers CLIPTextModel / CLIPTextModelWithProjection layout), e.g. Stable Diffusion's text encoder",
        },
        {
            "name": "clip.text_encoders",
            "roles": ["conditioner"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.encoders:CLIPTextEncoders",
            "formats": {"diffusers": "latentzoo.plugins.clip.diffusers:CLIPTextEncodersFormat"},  # SDXL's text_encoder(s)
            "description": "CLIP text encoders side by side (SDXL's ViT-L + bigG): penultimate states concatenated, pooled from the last's projection",
        },
        {
            "name": "clip.embedder",
            "roles": ["conditioner", "encoder"],
            "family": "clip",
            "target": "latentzoo.plugins.clip.embed:CLIPEmbedder",
            "description": "CLIP's projected unit-norm embeddings: text embedding as conditioner, image embedding as encoder (unCLIP)",
        },
    ]


@hookimpl
def latentzoo_commands(cli) -> None:
    classify, score = _commands()
    cli.add_command(classify)
    cli.add_command(score)


def _commands():
    """``latentzoo classify`` and ``latentzoo score``: thin commands over ``latentzoo.core.runtime.scoring``.

    Built here, inside the hook, so that inspecting commands import no model code (nor torch).
    """
    import json

    import click

    from latentzoo.core.contract.errors import LatentzooError

    def _registries(ctx: click.Context) -> tuple[str, ...]:
        return tuple((ctx.find_root().obj or {}).get("registries", ()))

    def _repeats(texts: list[str]) -> set[str]:
        seen: set[str] = set()
        return {t for t in texts if t in seen or seen.add(t)}

    def _read_texts(path: str) -> list[str]:
        from latentzoo.core.contract.userfiles import read_lines

        return read_lines(path, "--texts-file")

    @click.command()
    @click.argument("model")
    @click.argument("images", nargs=-1, required=True)
    @click.option("--labels", "-l", "labels", multiple=True, help='A candidate text, e.g. "a handwritten seven"; repeatable.')
    @click.option("--texts-file", type=click.Path(dir_okay=False), help="A file of candidate texts, one per line.")
    @click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
    @click.option("--json", "as_json", is_flag=True, help="Every image's probabilities as JSON.")
    @click.pass_context
    def classify(
        ctx: click.Context, model: str, images: tuple[str, ...], labels: tuple[str, ...], texts_file: str | None, as_json: bool, fit: bool
    ) -> None:
        """Zero-shot classification of IMAGES against candidate texts with an image-text MODEL (digits-clip).

        \b
          latentzoo classify digits-clip a.png b.png -l "a handwritten zero" -l "a handwritten one"
          latentzoo classify digits-clip *.png --texts-file prompts.txt --json
        """
        from latentzoo.core.runtime.scoring import classify as run

        texts = list(labels) + (_read_texts(texts_file) if texts_file else [])
        repeated = sorted(_repeats(texts))
        if repeated:  # two equal candidates would share one probability and one row of the output
            raise LatentzooError(f"candidate text {repeated[0]!r} is given more than once; give each label once")
        if not texts:
            raise LatentzooError("no candidate texts: pass --labels TEXT (repeatable) or --texts-file FILE")
        results = run(model, list(images), texts, fit=fit, extra=_registries(ctx))
        if as_json:
            click.echo(json.dumps([{"image": img, **r} for img, r in zip(images, results, strict=True)], indent=2))
            return
        for img, r in zip(images, results, strict=True):
            top = sorted(r["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            click.echo(f"{img}: {r['label']}  (" + ", ".join(f"{t!r} {p:.3f}" for t, p in top) + ")")

    @click.command()
    @click.argument("model")
    @click.argument("images", nargs=-1, required=True)
    @click.option("--text", "-t", "texts", multiple=True, help="A text to score each image against; repeatable.")
    @click.option("--fit", is_flag=True, help="Resize, centre-crop and convert inputs instead of refusing them.")
    @click.option("--json", "as_json", is_flag=True, help="Scores as JSON.")
    @click.pass_context
    def score(ctx: click.Context, model: str, images: tuple[str, ...], texts: tuple[str, ...], fit: bool, as_json: bool) -> None:
        """Text-image score: cosine similarity of each of IMAGES with each --text under MODEL (in [-1, 1]).

        \b
          latentzoo score digits-clip seven.png --text "a thick, slanted seven"
        """
        from latentzoo.core.runtime.scoring import score as run

        if not texts:
            raise LatentzooError("no text to score against: pass --text TEXT (repeatable)")
        scores = run(model, list(images), list(texts), fit=fit, extra=_registries(ctx))
        if as_json:
            click.echo(
                json.dumps(
                    [{"image": img, "scores": dict(zip(texts, row, strict=True))} for img, row in zip(images, scores, strict=True)],
                    indent=2,
                )
            )
            return
        for img, row in zip(images, scores, strict=True):
            click.echo(f"{img}: " + ", ".join(f"{t!r} {s:.4f}" for t, s in zip(texts, row, strict=True)))

    return classify, score
