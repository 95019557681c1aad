"""transformers ``CLIPTextModel`` (a diffusers pipeline's ``text_encoder`` + ``tokenizer``) <-> ``clip.text``.

Used by the diffusers format plugin through this family's declaration on ``clip.text``
(``"formats": {"diffusers": ...}``), e.g. for Stable Diffusion 1.x / 2.x pipelines.

Stable Diffusion's pipelines run the text encoder on ids padded to the full 77 tokens with no
attention mask (the config's ``use_attention_mask`` unset) and condition the UNet on every
token's last hidden state, the padding's included. A converted encoder does the same
(``use_attention_mask: false``), so its outputs match diffusers'. SD 2.x's ``text_encoder``
folder already holds the 23 layers diffusers runs (the penultimate layer of OpenCLIP ViT-H), so
the last hidden state is right for both.

The tokenizer (vocab.json + merges.txt, or tokenizer.json, with the folder's pad token: SD 2.x
pads with ``!``) is saved as ``<name>.tokenizer.json`` beside the weights and written back as
vocab.json + merges.txt on export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from latentzoo.core.contract.errors import LatentzooError

ARCH = "CLIPTextModel"


def text_config(where: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """clip.text's ``text_config`` from a transformers CLIPTextModel config.json dict."""
    from .model import HF_TEXT_DEFAULTS

    arch = (raw.get("architectures") or [ARCH])[0]
    if arch != ARCH:
        raise LatentzooError(f"{where}: text encoder {arch!r} is not a {ARCH} (the Stable Diffusion 1.x / 2.x text encoder)")
    return {k: raw.get(k, v) for k, v in HF_TEXT_DEFAULTS.items()}


def _tokenizer(tokenizer: Any, context_length: int) -> Any:
    from latentzoo.core.runtime import text

    if isinstance(tokenizer, text.TextTokenizer):
        return tokenizer
    return text.load(Path(tokenizer), context_length=context_length)


class CLIPTextFormat:
    """The diffusers mapping of ``clip.text``."""

    reads = (ARCH,)

    def read(self, ctx: Any, folder: Path, raw: dict[str, Any], comp: str, **context: Any) -> dict[str, Any]:
        """A standalone text_encoder folder (model.safetensors); its tokenizer from ``tokenizer`` or ../tokenizer."""
        weights = folder / "model.safetensors"
        if not weights.is_file():
            if (folder / "pytorch_model.bin").is_file():
                raise LatentzooError(
                    f"{folder} holds only pytorch_model.bin (a pickle, never loaded by latentzoo); re-save it with safe_serialization=True"
                )
            raise LatentzooError(f"{folder} has no model.safetensors; give a text encoder saved with safetensors")
        tokenizer = context.pop("tokenizer", None) or (folder.parent / "tokenizer" if (folder.parent / "tokenizer").is_dir() else folder)
        return self.read_state(ctx, folder, raw, ctx.read_tensors(weights), comp, tokenizer=tokenizer, **context)

    def read_state(
        self, ctx: Any, where: Any, raw: dict[str, Any], state: dict[str, Any], comp: str, *, tokenizer: Any, **context: Any
    ) -> dict[str, Any]:
        """A CLIPTextModel config + state dict and a tokenizer (TextTokenizer or folder) -> conditioner ``comp``."""
        from latentzoo.core.contract.weights import sha256_file, space_identity

        from .model import CLIPTextEncoder, hf_state_dict

        tcfg = text_config(where, raw)
        tok = _tokenizer(tokenizer, int(tcfg["max_position_embeddings"]))
        # Stable Diffusion's way unless the config asks diffusers to pass the padding mask.
        config: dict[str, Any] = {"text_config": tcfg, "projection_dim": None, "use_attention_mask": bool(raw.get("use_attention_mask"))}
        model = ctx.build_assigned(CLIPTextEncoder, config, hf_state_dict(state), where)
        tok.check_vocab(model.text_model.embeddings.token_embedding.num_embeddings, str(where))
        sha = ctx.save(comp, model, "clip")
        tok_file = f"{comp}.tokenizer.json"
        tok.save(ctx.stage / tok_file)
        config["tokenizer"] = {"file": tok_file, "sha256": sha256_file(ctx.stage / tok_file)}
        space = {**model.text_fields(), "pooled": True, "encoder": space_identity(sha)}
        ctx.components[comp] = {
            "family": "clip",
            "class": "clip.text",
            "roles": ["conditioner"],
            "config": config,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "conditioning_space": space,
            "description": f"{ARCH} ({tcfg['num_hidden_layers']} layers, width {tcfg['hidden_size']}) from {ctx.source.name}, converted",
            "training": dict(ctx.provenance),
        }
        return {"conditioning_space": space}

    def write(self, ctx: Any, entry: Any, folder: Path, *, tokenizer_folder: Path | None = None, **context: Any) -> str:
        """A transformers CLIPTextModel folder (config.json, model.safetensors) and, if asked, a CLIPTokenizer folder."""
        from latentzoo.core.runtime.sources import resolve_weights

        cfg = dict(entry.data.get("config") or {})
        if cfg.get("projection_dim"):
            raise LatentzooError(f"{entry.name} has a text projection; a diffusers text_encoder is a plain {ARCH}")
        if not cfg.get("tokenizer") and tokenizer_folder is not None:
            raise LatentzooError(f"{entry.name} ships no tokenizer; a diffusers pipeline folder needs one")
        path, _ = resolve_weights(entry)
        write_text_encoder(
            entry.name, cfg, ctx.tensors(entry), folder, path.parent, tokenizer_folder, mask=cfg.get("use_attention_mask", True)
        )
        return ARCH


def write_text_encoder(
    name: str,
    cfg: dict[str, Any],
    tensors: dict[str, Any],
    folder: Path,
    assets: Path,
    tokenizer_folder: Path | None,
    *,
    mask: bool = False,
) -> None:
    """One CLIPTextModel[WithProjection] folder from a clip.text config + its tensors (``text_model.*``,
    ``text_projection.weight``); its tokenizer (read from ``assets``) as a CLIPTokenizer folder if asked."""
    from latentzoo.core.contract.weights import save_tensors, write_bytes, write_json
    from latentzoo.core.runtime import text

    tcfg = dict(cfg.get("text_config") or {})
    spec = cfg.get("tokenizer")
    tok = text.load(assets / spec["file"], context_length=int(tcfg.get("max_position_embeddings", 77))) if spec else None
    folder.mkdir(parents=True, exist_ok=True)
    arch = "CLIPTextModelWithProjection" if cfg.get("projection_dim") else ARCH
    hf: dict[str, Any] = {"architectures": [arch], "model_type": "clip_text_model", "torch_dtype": "float32", **tcfg}
    if cfg.get("projection_dim"):
        hf["projection_dim"] = int(cfg["projection_dim"])
    if tok is not None:
        hf.update(bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    if mask:
        hf["use_attention_mask"] = True  # diffusers then passes the padding mask, as latentzoo does for this encoder
    write_json(folder / "config.json", hf)
    save_tensors(folder / "model.safetensors", tensors, metadata={"format": "pt"})
    if tokenizer_folder is None or tok is None:
        return
    model = json.loads(tok.tokenizer.to_str()).get("model") or {}
    if model.get("type") != "BPE":
        raise LatentzooError(f"{name}'s tokenizer is not CLIP's BPE; a CLIPTokenizer folder needs vocab.json + merges.txt")
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in model.get("merges") or []]
    tokenizer_folder.mkdir(parents=True, exist_ok=True)
    write_bytes(tokenizer_folder / "vocab.json", json.dumps(model["vocab"], ensure_ascii=False).encode())
    write_bytes(tokenizer_folder / "merges.txt", ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode())
    special = {"bos_token": text.BOS, "eos_token": text.EOS, "unk_token": text.EOS, "pad_token": tok.pad_token}
    write_json(tokenizer_folder / "special_tokens_map.json", special)
    write_json(
        tokenizer_folder / "tokenizer_config.json",
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": tok.context_length, "do_lower_case": True},
    )


ENCODERS = "CLIPTextEncoders"  # latentzoo's name for SDXL's text_encoder (+ text_encoder_2), as one conditioner


class CLIPTextEncodersFormat:
    """The diffusers mapping of ``clip.text_encoders``: SDXL's text_encoder / text_encoder_2 (+ tokenizers) as one conditioner.

    A pipeline mapping converts them with ``ctx.convert_state({"_class_name": "CLIPTextEncoders", "encoders":
    [config, ...], "force_zeros_for_empty_prompt": bool}, {"encoders.<i>.<transformers key>": tensor}, comp,
    where, tokenizers=[tokenizer, ...])`` and writes them with ``ctx.write_part(entry, folder,
    folders=[("text_encoder", "tokenizer"), ...])``."""

    reads = (ENCODERS,)

    def read_state(
        self, ctx: Any, where: Any, raw: dict[str, Any], state: dict[str, Any], comp: str, *, tokenizers: list[Any], **context: Any
    ) -> dict[str, Any]:
        from latentzoo.core.contract.weights import sha256_file, space_identity

        from .encoders import CLIPTextEncoders
        from .model import HF_PROJECTION_DIM, hf_state_dict

        encoders, weights = [], {}
        for i, (enc_raw, tokenizer) in enumerate(zip(raw["encoders"], tokenizers, strict=True)):
            arch = (enc_raw.get("architectures") or [ARCH])[0]
            if arch not in (ARCH, "CLIPTextModelWithProjection"):
                raise LatentzooError(f"{where}: text encoder {i + 1} is a {arch!r}, not a CLIPTextModel[WithProjection]")
            tcfg = text_config(where, {**enc_raw, "architectures": [ARCH]})
            projection = enc_raw.get("projection_dim", HF_PROJECTION_DIM) if arch.endswith("Projection") else None
            tok = _tokenizer(tokenizer, int(tcfg["max_position_embeddings"]))
            suffix = "" if i == 0 else f"_{i + 1}"
            tok_file = f"{comp}.tokenizer{suffix}.json"
            tok.save(ctx.stage / tok_file)
            encoders.append(
                {
                    "text_config": tcfg,
                    "projection_dim": projection,
                    "tokenizer": {"file": tok_file, "sha256": sha256_file(ctx.stage / tok_file)},
                }
            )
            prefix = f"encoders.{i}."
            part = hf_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            weights.update({prefix + k: v for k, v in part.items()})
        config = {"encoders": encoders, "hidden_layer": -2, "force_zeros_for_empty_prompt": bool(raw.get("force_zeros_for_empty_prompt"))}
        model = ctx.build_assigned(CLIPTextEncoders, config, weights, where)
        for encoder, tokenizer in zip(model.encoders, tokenizers, strict=True):
            _tokenizer(tokenizer, encoder.text_config["max_position_embeddings"]).check_vocab(
                encoder.text_model.embeddings.token_embedding.num_embeddings, str(where)
            )
        sha = ctx.save(comp, model, "clip")
        space = {**model.conditioning_fields(), "encoder": space_identity(sha)}
        widths = " + ".join(str(e["text_config"]["hidden_size"]) for e in encoders)
        ctx.components[comp] = {
            "family": "clip",
            "class": "clip.text_encoders",
            "roles": ["conditioner"],
            "config": config,
            "weights": {"path": f"{comp}.safetensors", "sha256": sha},
            "conditioning_space": space,
            "description": f"{len(encoders)} CLIP text encoder(s) (widths {widths}, penultimate states) from {ctx.source.name}, converted",
            "training": dict(ctx.provenance),
        }
        return {"conditioning_space": space}

    def write(self, ctx: Any, entry: Any, folder: Path, *, folders: list[tuple[str, str]] | None = None, **context: Any) -> str:
        """Each encoder as a CLIPTextModel[WithProjection] folder + CLIPTokenizer folder under ``folder`` (names from ``folders``)."""
        from latentzoo.core.runtime.sources import resolve_weights

        cfg = dict(entry.data.get("config") or {})
        encoders = list(cfg.get("encoders") or [])
        folders = folders or [
            (f"text_encoder{'' if i == 0 else f'_{i + 1}'}", f"tokenizer{'' if i == 0 else f'_{i + 1}'}") for i in range(len(encoders))
        ]
        if len(folders) != len(encoders):
            raise LatentzooError(f"{entry.name} holds {len(encoders)} text encoder(s); this pipeline takes {len(folders)}")
        path, _ = resolve_weights(entry)
        tensors = ctx.tensors(entry)
        for i, (enc, (te, tk)) in enumerate(zip(encoders, folders, strict=True)):
            prefix = f"encoders.{i}."
            part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            write_text_encoder(entry.name, enc, part, folder / te, path.parent, folder / tk)
        return ENCODERS
