"""The public trainer contract (docs/plugins.md, "Trainer contract"), used by a third party.

A plugin built and installed here as a wheel declares a family with a ``trainer`` written
only against the public API (``latentzoo.TrainOptions``, ``latentzoo.Run``,
``latentzoo.Phase``, ``latentzoo.split_options``). ``latentzoo train <its family>`` must
give it the same run directory as a built-in family (checkpoints, exact resume, the
published weights + config + registry fragment), and the fragment must build.
"""

from __future__ import annotations

import json

import pytest

HOOKIMPL = "from latentzoo.core.contract.hookspecs import hookimpl"

ACME_TRAIN = {
    "dist": "acme-train",
    "package": "acme_train",
    "init": f'''
        """A third-party family with a trainer: the mean image intensity, as a one-parameter "prior"."""
        {HOOKIMPL}

        LATENTZOO_PLUGIN_API = 1


        @hookimpl
        def latentzoo_components():
            return [
                {{
                    "name": "acme.mean",
                    "roles": ["prior"],
                    "kind": "analytic",
                    "family": "acmemean",
                    "target": "acme_train.model:MeanPrior",
                    "trainer": "acme_train.train:train",
                    "description": "mean pixel value per channel",
                }}
            ]
    ''',
    "extra": {
        "model.py": """
            import torch


            class MeanPrior(torch.nn.Module):
                kind = "analytic"

                def __init__(self, channels: int = 1) -> None:
                    super().__init__()
                    self.mean = torch.nn.Parameter(torch.zeros(channels))

                @classmethod
                def from_config(cls, config):
                    return cls(**config)
        """,
        "train.py": """
            import torch

            import latentzoo
            from latentzoo.core.runtime.data import load_dataset

            from .model import MeanPrior


            def train(options: "latentzoo.TrainOptions"):
                run = latentzoo.Run(options)
                (cfg,) = latentzoo.split_options("acmemean", options.config, {"channels": 1})
                data = load_dataset(options.data, split="train", size=8, channels=cfg["channels"])
                torch.manual_seed(options.seed)
                model = MeanPrior(**cfg).to(run.device)
                opt = torch.optim.SGD(model.parameters(), lr=options.lr)
                ckpt = run.checkpointer({"model": model}, {"opt": opt})
                start, history = ckpt.start()

                def loss(mb):
                    target = mb.data.mean(dim=(2, 3)) + 0.01 * mb.randn(cfg["channels"])
                    value = (target - model.mean).pow(2).mean()
                    return value, {"mse": value.detach()}

                history = run.loop(data, [latentzoo.Phase("mean", opt, model, loss)], ckpt, start=start, history=history,
                                   desc="acmemean", state={"config": cfg})
                return run.publish_component(
                    model,
                    family="acmemean",
                    component_class="acme.mean",
                    roles=["prior"],
                    config=cfg,
                    latent_space={"kind": "continuous", "channels": cfg["channels"], "factor": 1, "autoencoder": "none"},
                    metrics={"mean": round(float(model.mean[0]), 4)},
                    history=history,
                    description=f"mean intensity of {options.data}, {options.steps} steps",
                )
        """,
    },
}

ARGS = ["--steps", "6", "--batch-size", "8", "--checkpoint-every", "2", "--lr", "0.5", "--seed", "1", "--no-progress"]


@pytest.fixture(scope="module")
def acme_site(plugin_factory):
    return plugin_factory(ACME_TRAIN)


def test_a_third_party_family_trains_resumes_and_publishes_like_a_builtin(cli, tmp_path, acme_site):
    sites = [acme_site]
    run = tmp_path / "run"
    result = cli("train", "acmemean", "-o", str(run), "--name", "acme-mean", *ARGS, sites=sites).assert_ok()
    assert "trained acmemean" in result.stderr and str(run / "registry.yaml") in result.stderr

    # The run folder every family gets: published files and verified step checkpoints.
    assert {"model.safetensors", "config.json", "metrics.json", "registry.yaml", "checkpoints"} <= {p.name for p in run.iterdir()}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004", "step-00000006"]
    manifest = json.loads((run / "checkpoints" / "step-00000006" / "manifest.json").read_text())
    assert manifest["step"] == 6 and set(manifest["files"]) == {"checkpoint.safetensors", "state.json"}
    assert json.loads((run / "config.json").read_text()) == {"channels": 1}

    # The fragment names the component with its sha256; it composes into the registry and builds.
    fragment = str(run / "registry.yaml")
    info = cli("--registry", fragment, "info", "acme-mean", "--json", sites=sites).assert_ok().json()
    assert info["class"] == "acme.mean" and info["family"] == "acmemean" and info["layer"] == "cli"
    assert info["weights"]["path"] == "model.safetensors" and len(info["weights"]["sha256"]) == 64
    assert info["training"]["steps"] == 6
    code = (
        "import sys, latentzoo; m = latentzoo.build('acme-mean', 'prior', extra=[sys.argv[1]]);"
        "print(float(m.mean[0]), latentzoo.info('acme-mean', extra=[sys.argv[1]]).data['metrics']['mean'])"
    )
    built, metric = map(float, cli.python("-c", code, fragment, sites=sites).assert_ok().stdout.split())
    assert built == pytest.approx(metric, abs=1e-4)
    assert -1.0 < built < 0.0  # digits are mostly background (-1): it learned the data's mean, not its init (0)

    # Exact resume, as for built-in families: 4 steps then --resume to 6 equals 6 straight.
    split = tmp_path / "split"
    short = [*ARGS]
    short[1] = "4"
    cli("train", "acmemean", "-o", str(split), "--name", "acme-mean", *short, sites=sites).assert_ok()
    cli("train", "acmemean", "-o", str(split), "--name", "acme-mean", "--resume", *ARGS, sites=sites).assert_ok()
    assert (split / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()

    # Its options are checked like a built-in's, and a failure leaves no run directory.
    bad = tmp_path / "bad"
    cli("train", "acmemean", "-o", str(bad), "--set", "chanels=2", *ARGS, sites=sites).assert_one_line_error(
        "unknown acmemean option(s) chanels", "known: channels"
    )
    assert not bad.exists()


def test_the_python_api_trains_the_same_way(cli, tmp_path, acme_site):
    code = (
        "import sys, latentzoo\n"
        "opts = latentzoo.TrainOptions(out=sys.argv[1], steps=2, batch_size=8, checkpoint_every=2, lr=0.5, name='acme-api', progress=False)\n"
        "entry = latentzoo.train('acmemean', opts)\n"
        "print(entry['weights']['sha256'])\n"
    )
    out = tmp_path / "api"
    sha = cli.python("-c", code, str(out), sites=[acme_site]).assert_ok().stdout.strip()
    from latentzoo.core.contract.weights import sha256_file

    assert sha == sha256_file(out / "model.safetensors")
    bad = cli.python("-c", code.replace("lr=0.5", "lr=float('nan')"), str(tmp_path / "nan"), sites=[acme_site])
    assert bad.returncode != 0 and "--lr must be a finite positive number, not nan" in bad.stderr
    assert not (tmp_path / "nan").exists()
