"""Tests for greenbench.models: shapes, scaling, initialisation, sampling and real CPU training.

Training tests run a real ``lightning.pytorch.Trainer`` on CPU on tiny random images, at every
precision the sweeps use (except ``16-mixed``, which Lightning refuses on CPU).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

import greenbench.models
from greenbench.models import DEFAULT_LR, MODELS, build_model
from greenbench.models.gan import GAN
from greenbench.models.layers import (
    DecoderStack,
    EncoderStack,
    adam_eps,
    channel_plan,
    size_chain,
)
from greenbench.models.vae import VAE

REPO_ROOT = Path(greenbench.models.__file__).resolve().parents[2]
IMAGE_SIZES = (8, 9, 16, 28, 32, 64)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and idle threads spinning on a busy
    machine made this file several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(name: str, image_size: int = 8, channels: int = 1, **kwargs: float) -> nn.Module:
    """A model small enough to train in milliseconds."""
    kwargs.setdefault("lr", DEFAULT_LR[name])
    return build_model(
        name,
        image_size=image_size,
        channels=channels,
        width=kwargs.pop("width", 0.125),
        latent_dim=int(kwargs.pop("latent_dim", 8)),
        lr=kwargs.pop("lr"),
    )


def image_loader(
    n: int, image_size: int = 8, channels: int = 1, batch_size: int = 4, seed: int = 0
) -> DataLoader:
    """``(images, labels)`` batches of random images in [-1, 1], in a fixed order."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, channels, image_size, image_size, generator=g) * 2 - 1
    labels = torch.zeros(n, dtype=torch.long)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def make_trainer(precision: str, max_steps: int, callbacks: list | None = None) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks or [],
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().float().clone() for name, p in module.named_parameters()}


def unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Names of parameters equal to their snapshot."""
    return [
        name
        for name, p in module.named_parameters()
        if torch.equal(p.detach().float(), before[name])
    ]


def all_finite(module: nn.Module) -> bool:
    return all(torch.isfinite(p.detach()).all() for p in module.parameters())


def adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    """The distinct step counts in an Adam optimizer's per-parameter state."""
    return {int(state["step"]) for state in optimizer.state.values()}


class RecordOutputs(pl.Callback):
    """Keeps what ``training_step`` returned for every batch."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.outputs.append(dict(outputs))


# --- layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image_size", "expected"),
    [
        (8, [4, 8]),
        (9, [3, 5, 9]),
        (16, [4, 8, 16]),
        (28, [4, 7, 14, 28]),
        (32, [4, 8, 16, 32]),
        (64, [4, 8, 16, 32, 64]),
    ],
)
def test_size_chain(image_size: int, expected: list[int]) -> None:
    assert size_chain(image_size) == expected


def test_channel_plan() -> None:
    assert channel_plan(1.0, 4) == [512, 256, 128, 64]
    assert channel_plan(0.5, 2) == [64, 32]
    assert channel_plan(0.125, 1) == [8]
    assert channel_plan(0.001, 3) == [4, 2, 1]  # base never drops below one channel


def test_stack_rejects_images_without_hidden_layers() -> None:
    with pytest.raises(ValueError, match="image_size"):
        DecoderStack(4, 1, latent_dim=8)
    with pytest.raises(ValueError, match="image_size"):
        EncoderStack(4, 1)


def test_adam_eps_only_raised_for_float16() -> None:
    assert adam_eps(torch.float32) == 1e-8
    assert adam_eps(torch.bfloat16) == 1e-8
    assert adam_eps(torch.float64) == 1e-8
    assert adam_eps(torch.float16) == 1e-4
    assert torch.tensor(adam_eps(torch.float16), dtype=torch.float16).item() > 0


# --- shapes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_gan_shapes(image_size: int, channels: int) -> None:
    gan = GAN(image_size, channels, width=0.125, latent_dim=8)
    z = torch.randn(2, 8)
    images = gan.generator(z)
    assert images.shape == (2, channels, image_size, image_size)
    assert images.abs().max() <= 1.0
    logits = gan.discriminator(images)
    assert logits.shape == (2,)
    x = torch.rand(3, channels, image_size, image_size)
    assert gan.discriminator(x).shape == (3,)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_vae_shapes(image_size: int, channels: int) -> None:
    vae = VAE(image_size, channels, width=0.125, latent_dim=8)
    x = torch.rand(2, channels, image_size, image_size) * 2 - 1
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 8)
    assert vae.decode(mu).shape == x.shape
    assert vae(x).shape == x.shape
    recon_nll, kl = vae.negative_elbo(x)
    assert recon_nll.shape == kl.shape == (2,)


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_encoder_ends_at_first_chain_size(image_size: int) -> None:
    encoder = EncoderStack(image_size, 3, width=0.25)
    features = encoder(torch.rand(2, 3, image_size, image_size))
    first = size_chain(image_size)[0]
    assert encoder.out_size == first
    assert features.shape == (2, encoder.out_channels, first, first)
    assert encoder.out_channels == channel_plan(0.25, len(size_chain(image_size)) - 1)[0]


def test_dcgan_channel_layout_at_64() -> None:
    gan = GAN(64, 3, width=1.0)
    out_channels = [
        m.out_channels for m in gan.generator.modules() if isinstance(m, nn.ConvTranspose2d)
    ]
    assert out_channels == [512, 256, 128, 64, 3]
    convs = [m for m in gan.discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert convs[-1].kernel_size == (4, 4)


# --- width scaling and initialisation ---------------------------------------------------------


def gan_forward_flops(width: float) -> int:
    gan = GAN(16, 1, width=width, latent_dim=32)
    z = torch.randn(4, 32)
    with FlopCounterMode(display=False) as counter:
        gan.discriminator(gan.generator(z))
    return counter.get_total_flops()


def test_width_half_costs_about_a_quarter_of_the_flops() -> None:
    ratio = gan_forward_flops(0.5) / gan_forward_flops(1.0)
    assert 0.2 <= ratio <= 0.32


@pytest.mark.parametrize("name", MODELS)
def test_dcgan_initialisation(name: str) -> None:
    torch.manual_seed(0)
    model = tiny_model(name, image_size=32, channels=3, width=1.0)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.detach().flatten() for m in convs])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    for m in convs:
        if m.weight.numel() > 10_000:
            assert m.weight.std().item() == pytest.approx(0.02, rel=0.1)
        if m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    gammas = torch.cat([m.weight.detach() for m in norms])
    assert gammas.mean().item() == pytest.approx(1.0, abs=0.005)
    assert gammas.std().item() == pytest.approx(0.02, rel=0.2)
    assert all(torch.count_nonzero(m.bias) == 0 for m in norms)


def test_vae_log_sigma_starts_at_zero() -> None:
    vae = tiny_model("vae")
    assert isinstance(vae.log_sigma, nn.Parameter)
    assert vae.log_sigma.shape == ()
    assert vae.log_sigma.item() == 0.0


# --- losses -----------------------------------------------------------------------------------


def test_vae_negative_elbo_matches_the_gaussian_density() -> None:
    torch.manual_seed(0)
    vae = tiny_model("vae", image_size=9, channels=3)
    with torch.no_grad():
        vae.log_sigma.fill_(-0.7)
    x = torch.rand(4, 3, 9, 9) * 2 - 1
    torch.manual_seed(1)
    recon_nll, kl = vae.negative_elbo(x)

    torch.manual_seed(1)
    mu, logvar = vae.encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    mean = vae.decode(z)
    sigma = math.exp(-0.7)
    likelihood = torch.distributions.Normal(mean, sigma)
    expected_nll = -likelihood.log_prob(x).flatten(1).sum(1)
    posterior = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected_kl = torch.distributions.kl_divergence(posterior, prior).sum(1)
    torch.testing.assert_close(recon_nll, expected_nll, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(kl, expected_kl, rtol=1e-5, atol=1e-5)


def test_vae_loss_terms_are_float32_under_half_precision() -> None:
    vae = tiny_model("vae").to(torch.bfloat16)
    x = (torch.rand(2, 1, 8, 8) * 2 - 1).to(torch.bfloat16)
    recon_nll, kl = vae.negative_elbo(x)
    assert recon_nll.dtype == kl.dtype == torch.float32


# --- sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_sample(name: str) -> None:
    model = tiny_model(name, image_size=9, channels=3)
    model.train()
    images = model.sample(5, generator=torch.Generator().manual_seed(7))
    assert images.shape == (5, 3, 9, 9)
    assert images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert not images.requires_grad
    assert model.training and all(m.training for m in model.modules())

    again = model.sample(5, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(images, again, rtol=0, atol=0)
    other = model.sample(5, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(images, other)

    model.eval()
    model.sample(2)
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", MODELS)
def test_sample_from_low_precision_model_is_float32(name: str) -> None:
    model = tiny_model(name).to(torch.bfloat16)
    images = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.float32
    assert images.shape == (3, 1, 8, 8)


# --- package ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("gan", GAN), ("vae", VAE)])
def test_build_model(name: str, cls: type) -> None:
    model = build_model(name, image_size=28, channels=1, width=0.25, latent_dim=16, lr=3e-4)
    assert type(model) is cls
    assert isinstance(model, pl.LightningModule)
    assert dict(model.hparams) == {
        "image_size": 28,
        "channels": 1,
        "width": 0.25,
        "latent_dim": 16,
        "lr": 3e-4,
    }


def test_build_model_rejects_unknown_names() -> None:
    assert MODELS == ("gan", "vae")
    assert DEFAULT_LR == {"gan": 2e-4, "vae": 1e-3}
    with pytest.raises(ValueError, match="unknown model 'flow'"):
        build_model("flow", image_size=8, channels=1, width=1.0, latent_dim=8, lr=1e-3)


def test_importing_the_package_does_not_import_torch() -> None:
    code = (
        "import sys, greenbench.models as m; "
        "assert m.MODELS and m.DEFAULT_LR; "
        "heavy = sorted(k for k in ('torch', 'lightning') if k in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- training with the Lightning Trainer ------------------------------------------------------

PRECISIONS = ("32-true", "bf16-mixed", "16-true", "bf16-true", "64-true")
PARAM_DTYPES = {
    "32-true": torch.float32,
    "bf16-mixed": torch.float32,
    "16-true": torch.float16,
    "bf16-true": torch.bfloat16,
    "64-true": torch.float64,
}


def test_gan_configuration() -> None:
    gan = tiny_model("gan")
    assert gan.automatic_optimization is False
    opt_g, opt_d = gan.configure_optimizers()
    for opt in (opt_g, opt_d):
        assert isinstance(opt, torch.optim.Adam)
        assert opt.defaults["betas"] == (0.5, 0.999)
        assert opt.defaults["lr"] == DEFAULT_LR["gan"]
    assert {id(p) for p in opt_g.param_groups[0]["params"]} == {
        id(p) for p in gan.generator.parameters()
    }
    assert {id(p) for p in opt_d.param_groups[0]["params"]} == {
        id(p) for p in gan.discriminator.parameters()
    }


@pytest.mark.parametrize("precision", PRECISIONS)
def test_gan_trains(precision: str) -> None:
    torch.manual_seed(0)
    gan = tiny_model("gan")
    before_g, before_d = snapshot(gan.generator), snapshot(gan.discriminator)
    recorder = RecordOutputs()
    batches = 3
    # Manual optimization with two optimizers: every optimizer step counts toward
    # global_step / max_steps, so one batch is two steps.
    trainer = make_trainer(precision, max_steps=2 * batches, callbacks=[recorder])
    trainer.fit(gan, image_loader(16))

    assert trainer.global_step == 2 * batches
    assert len(recorder.outputs) == batches
    opt_g, opt_d = trainer.optimizers
    assert adam_steps(opt_g) == adam_steps(opt_d) == {batches}
    assert opt_g.defaults["eps"] == adam_eps(PARAM_DTYPES[precision])

    assert next(gan.parameters()).dtype == PARAM_DTYPES[precision]
    assert unchanged(gan.generator, before_g) == []
    # The logit bias may legitimately stay put: its gradient in d_loss is
    # mean(sigmoid(D(real))) - 1 + mean(sigmoid(D(fake))), which is zero while all logits are
    # near 0 and rounds to exactly zero in bfloat16; it gets no gradient from g_loss.
    assert set(unchanged(gan.discriminator, before_d)) <= {"head.bias"}
    assert all_finite(gan)

    for out in recorder.outputs:
        assert set(out) == {"d_loss", "g_loss"}
        for value in out.values():
            assert isinstance(value, torch.Tensor) and value.dim() == 0
            assert not value.requires_grad and torch.isfinite(value)
    assert {"train/d_loss", "train/g_loss"} <= set(trainer.logged_metrics)

    images = gan.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_vae_trains(precision: str) -> None:
    torch.manual_seed(0)
    vae = tiny_model("vae")
    before = snapshot(vae)
    recorder = RecordOutputs()
    batches = 3
    trainer = make_trainer(precision, max_steps=batches, callbacks=[recorder])
    trainer.fit(vae, image_loader(16))

    assert trainer.global_step == batches
    assert len(recorder.outputs) == batches
    (opt,) = trainer.optimizers
    assert adam_steps(opt) == {batches}
    assert opt.defaults["eps"] == adam_eps(PARAM_DTYPES[precision])

    assert vae.log_sigma.dtype == PARAM_DTYPES[precision]
    assert unchanged(vae, before) == []
    assert all_finite(vae)

    for out in recorder.outputs:
        assert set(out) == {"loss", "recon_nll", "kl"}
        for value in out.values():
            assert isinstance(value, torch.Tensor) and value.dim() == 0
            assert not value.requires_grad and torch.isfinite(value)
            assert value.dtype in (torch.float32, torch.float64)
        torch.testing.assert_close(out["loss"], out["recon_nll"] + out["kl"])
    assert {"train/loss", "train/recon_nll", "train/kl"} <= set(trainer.logged_metrics)

    images = vae.sample(2, generator=torch.Generator().manual_seed(0))
    assert images.dtype == torch.float32 and torch.isfinite(images).all()


def test_vae_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    vae = tiny_model("vae", latent_dim=4)
    recorder = RecordOutputs()
    trainer = make_trainer("32-true", max_steps=30, callbacks=[recorder])
    # One fixed batch of 8 images, seen 30 times.
    trainer.fit(vae, image_loader(8, batch_size=8))

    losses = torch.stack([out["loss"] for out in recorder.outputs])
    assert len(losses) == 30
    # About 1.4 nats of progress against step-to-step noise of about 0.2 nats.
    assert losses[-5:].mean() < losses[:5].mean() - 0.5
    assert losses[-1] < losses[0]
