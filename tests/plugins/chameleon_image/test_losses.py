"""Loss plugins: ``lpips`` (structure, weight loading, properties) and ``patch-gan`` (hinge, start, adaptive weight)."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import torch
from chameleon_image.losses import LPIPSNetwork, PatchGANLoss, PatchGANOptions
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import chameleon_sdk
from chameleon_sdk import CheckpointError, ConfigError, plugin_api
from chameleon_sdk.plugin_api import ImageLossInputs, ImageTokenizerLoss


@pytest.fixture(scope="module")
def lpips_weights(tmp_path_factory):
    """A random-weight LPIPS file in the ``lpips`` package's key layout (real weights are not bundled)."""
    torch.manual_seed(0)
    network = LPIPSNetwork()
    with torch.no_grad():  # non-negative 1x1 weights, as trained LPIPS has, so distances are >= 0
        for k in range(5):
            getattr(network, f"lin{k}").model[1].weight.uniform_(0.0, 1.0)
    path = tmp_path_factory.mktemp("lpips") / "lpips-vgg.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def lpips(lpips_weights):
    return chameleon_sdk.PluginRegistry().build("image_tokenizer_loss", "lpips", {"weights": str(lpips_weights)})


def test_both_losses_are_registered_plugins_following_the_contract(lpips):
    names = {r.name for r in chameleon_sdk.available_plugins("image_tokenizer_loss")}
    assert {"lpips", "patch-gan"} <= names
    assert isinstance(lpips, ImageTokenizerLoss) and isinstance(PatchGANLoss(), ImageTokenizerLoss)


def test_lpips_without_weights_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="needs pretrained LPIPS-VGG16 weights, which are not bundled"):
        chameleon_sdk.get_registry().build("image_tokenizer_loss", "lpips")


def test_lpips_weight_files_are_checked(lpips_weights, tmp_path):
    with pytest.raises(CheckpointError, match=r"nowhere\.safetensors' is missing"):
        chameleon_sdk.get_registry().build(
            "image_tokenizer_loss", "lpips", {"weights": str(tmp_path / "nowhere.safetensors")}
        )
    state = plugin_api.read_safetensors(lpips_weights)
    del state["lin3.model.1.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(CheckpointError, match=r"lacks 1 tensor\(s\).*lin3\.model\.1\.weight"):
        chameleon_sdk.get_registry().build(
            "image_tokenizer_loss", "lpips", {"weights": str(tmp_path / "partial.safetensors")}
        )


def test_torchvision_trunk_keys_give_the_same_network(lpips, lpips_weights, tmp_path, shapes):
    state = plugin_api.read_safetensors(lpips_weights)
    renamed = {}
    for key, value in state.items():
        if key.startswith("net.slice"):
            key = "features." + key.split(".", 2)[2]  # net.slice2.5.weight -> features.5.weight
        renamed[key] = value
    renamed["scaling_layer.shift"] = torch.zeros(1, 3, 1, 1)  # the lpips package's constants: ignored
    save_file(renamed, str(tmp_path / "tv.safetensors"))
    other = chameleon_sdk.get_registry().build(
        "image_tokenizer_loss", "lpips", {"weights": str(tmp_path / "tv.safetensors")}
    )
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(other.distance(a, b), lpips.distance(a, b))


@settings(max_examples=8)
@given(seed=st.integers(0, 2**31 - 1), side=st.sampled_from([16, 32]))
def test_lpips_is_zero_for_identical_images_and_symmetric(lpips, seed, side):
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(2, 3, side, side, generator=generator) * 2 - 1
    b = torch.rand(2, 3, side, side, generator=generator) * 2 - 1
    assert torch.equal(lpips.distance(a, a.clone()), torch.zeros(2))
    ab, ba = lpips.distance(a, b), lpips.distance(b, a)
    assert torch.allclose(ab, ba, rtol=1e-5) and bool((ab > 0).all())


def test_lpips_term_is_differentiable_and_weighted(lpips_weights):
    loss = chameleon_sdk.get_registry().build(
        "image_tokenizer_loss", "lpips", {"weights": str(lpips_weights), "weight": 0.5}
    )
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = (pixels + 0.3 * torch.randn_like(pixels)).requires_grad_(True)
    term, stats = loss.loss(_inputs(pixels, recon))
    assert term.item() == pytest.approx(0.5 * stats["lpips"]) and stats["lpips"] > 0
    (grad,) = torch.autograd.grad(term, recon)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.network.parameters())  # the network itself is frozen
    identical, _ = loss.loss(_inputs(pixels, pixels.clone().requires_grad_(True)))
    assert identical.item() == 0.0


def _inputs(pixels, recon, step=0, nll=None, last_layer=None):
    return ImageLossInputs(
        pixels=pixels,
        reconstruction=recon,
        step=step,
        reconstruction_loss=recon.sum() * 0 if nll is None else nll,
        last_layer=torch.zeros(1) if last_layer is None else last_layer,
    )


def _decoder_like():
    """A last layer and a reconstruction that depends on it, as the trainer passes them."""
    torch.manual_seed(0)
    last = torch.nn.Conv2d(8, 3, 3, padding=1)
    features = torch.randn(2, 8, 32, 32)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = last(features)
    nll = (recon - pixels).abs().mean()
    return pixels, recon, nll, last.weight


def test_patch_gan_is_off_before_its_start_step():
    loss = PatchGANLoss(PatchGANOptions(start_step=5, base_channels=8))
    pixels, recon, nll, last = _decoder_like()
    before = {k: v.clone() for k, v in loss.discriminator.state_dict().items()}
    term, stats = loss.loss(_inputs(pixels, recon, step=4, nll=nll, last_layer=last))
    assert term.item() == 0.0 and stats == {}
    assert loss.update(_inputs(pixels, recon.detach(), step=4, nll=nll, last_layer=last)) == {}
    assert all(torch.equal(v, loss.discriminator.state_dict()[k]) for k, v in before.items())


def test_patch_gan_adaptive_weight_and_hinge_loss():
    options = PatchGANOptions(start_step=0, base_channels=8, weight=0.8)
    loss = PatchGANLoss(options)
    pixels, recon, nll, last = _decoder_like()
    term, stats = loss.loss(_inputs(pixels, recon, nll=nll, last_layer=last))
    g_loss = -loss.discriminator(recon).mean()
    (g_grad,) = torch.autograd.grad(g_loss, last, retain_graph=True)
    (nll_grad,) = torch.autograd.grad(nll, last, retain_graph=True)
    expected = 0.8 * nll_grad.norm() / (g_grad.norm() + 1e-4)
    assert stats["adversarial_weight"] == pytest.approx(float(expected), rel=1e-5)
    assert term.detach().item() == pytest.approx(float((expected * g_loss).detach()), rel=1e-5)
    fixed = PatchGANLoss(attrs.evolve(options, adaptive_weight=False))
    _, fixed_stats = fixed.loss(_inputs(pixels, recon, nll=nll, last_layer=last))
    assert fixed_stats["adversarial_weight"] == pytest.approx(0.8)

    with torch.no_grad():
        real, fake = loss.discriminator(pixels), loss.discriminator(recon)
    hinge = 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
    before = [p.clone() for p in loss.discriminator.parameters()]
    stats = loss.update(_inputs(pixels, recon.detach(), nll=nll, last_layer=last))
    assert stats["d_loss"] == pytest.approx(float(hinge), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, loss.discriminator.parameters()))


def test_patch_gan_refuses_images_smaller_than_its_patches():
    loss = PatchGANLoss(PatchGANOptions(num_layers=3, base_channels=8))
    pixels = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ConfigError, match="at least 24 px, got \\[16, 16\\]: lower its num_layers"):
        loss.update(_inputs(pixels, pixels))


def test_training_with_both_losses_reports_their_stats(lpips_weights, tiny_tokenizer, shapes):
    seen = []
    tiny_tokenizer.fit(
        shapes[:12],
        {
            "steps": 2,
            "batch_size": 4,
            "held_out_fraction": 0.0,
            "losses": [
                {"name": "lpips", "options": {"weights": str(lpips_weights)}},
                {"name": "patch-gan", "options": {"base_channels": 8, "start_step": 1}},
            ],
        },
        progress=False,
        callback=lambda step, stats: seen.append(stats),
    )
    assert "lpips" in seen[0] and "g_loss" not in seen[0]
    assert {"lpips", "g_loss", "d_loss", "adversarial_weight"} <= set(seen[1])


class CountingLoss:
    """A third-party loss: adds nothing, counts calls."""

    calls: ClassVar[list[int]] = []

    def loss(self, inputs):
        CountingLoss.calls.append(inputs.step)
        return inputs.reconstruction_loss.new_zeros(()), {"counted": float(len(CountingLoss.calls))}

    def update(self, inputs):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass

    def to(self, device):
        return self


class CountingPlugin:
    @plugin_api.hookimpl
    def register_image_tokenizer_losses(self, register):
        register("counting", CountingLoss)
        register("not-a-loss", object)


def test_third_party_losses_come_from_the_registry(registry, registered_plugin, tiny_options, shapes):
    registered_plugin(CountingPlugin(), name="counting-plugin")
    tokenizer = chameleon_sdk.get_registry().build("modality", "image", tiny_options)
    CountingLoss.calls.clear()
    tokenizer.fit(
        shapes[:4], {"steps": 2, "batch_size": 2, "held_out_fraction": 0.0, "losses": ["counting"]}, progress=False
    )
    assert CountingLoss.calls == [0, 1]
    expected = r"'not-a-loss' does not follow chameleon_sdk\.plugin_api\.ImageTokenizerLoss"
    with pytest.raises(ConfigError, match=expected):
        tokenizer.fit(shapes[:4], {"steps": 1, "losses": ["not-a-loss"]}, progress=False)
    with pytest.raises(chameleon_sdk.PluginNotFoundError, match="lpipz"):
        tokenizer.fit(shapes[:4], {"steps": 1, "losses": ["lpipz"]}, progress=False)
