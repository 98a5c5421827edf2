"""Extra training losses of the image tokenizer (kind ``image_tokenizer_loss``): ``lpips`` and ``patch-gan``.

Both follow :class:`plugin_api.ImageTokenizerLoss` and are named in the training options'
``losses``; the trainer finds them through the registry.

``lpips``: the perceptual distance of Zhang et al. (2018) on VGG16 features, as taming's VQGAN uses
it. The pretrained weights are not bundled (they come from ImageNet training and a human
perceptual-judgement calibration): a user supplies one ``.safetensors`` file. Its keys are the
``lpips`` package's: ``net.slice{1..5}.{i}.weight|bias`` (VGG16 ``features`` layer ``i``) and
``lin{0..4}.model.1.weight``; ``features.{i}.*`` (torchvision's VGG16) is accepted for the trunk, and
``scaling_layer.*`` (constants) and ``lins.*`` (a second name of ``lin*``) are ignored. Distance::

    d(x, y) = sum_k mean_hw( w_k . (n(f_k(s(x))) - n(f_k(s(y))))^2 )

with ``s`` the input scaling, ``f_k`` the VGG16 activations after relu1_2, 2_2, 3_3, 4_3, 5_3, ``n``
the unit norm over channels and ``w_k`` the learnt 1x1 weights.

``patch-gan``: taming's adversarial loss. A PatchGAN discriminator (pix2pix's N-layer one: 4x4
convs, BatchNorm, LeakyReLU 0.2, one logit per patch) trained with the hinge loss
``0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x')))``; the tokenizer gets ``-mean D(x')`` weighted by
``weight * |grad nll| / (|grad g| + 1e-4)`` (gradients at the decoder's last layer, clamped to
``[0, max_adaptive_weight]``): the adaptive weight that keeps the adversarial gradient on the scale
of the reconstruction gradient. Both terms are off before ``start_step``.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from chameleon_sdk import ConfigError, plugin_api
from chameleon_sdk.plugin_api import ImageLossInputs

# -- LPIPS --------------------------------------------------------------------------------------------

#: VGG16 ``features`` up to relu5_3: conv widths, "M" for a 2x2 max-pool (each conv is followed by a ReLU)
VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: ``features`` index ranges of the five slices ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG16_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_FEATURES_KEY = re.compile(r"features\.(\d+)\.(weight|bias)")


def _vgg16_layers() -> list[nn.Module]:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_FEATURES:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return layers


class _VGG16Slices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_layers()
        for k, (a, b) in enumerate(VGG16_SLICES, start=1):
            self.add_module(f"slice{k}", nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(a, b))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k in range(1, len(VGG16_SLICES) + 1):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)
        return out


class _Linear(nn.Module):
    """A 1x1 conv to one channel; ``model.0`` is the (inactive at eval) dropout slot of the reference."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]


class LPIPSNetwork(nn.Module):
    """The LPIPS-VGG16 network (randomly initialised; see :func:`load_lpips_weights`)."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        # input scaling of the reference: pixels in [-1, 1] -> roughly ImageNet-normalised
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.net = _VGG16Slices()
        for k, channels in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{k}", _Linear(channels))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances ``[B]`` between two pixel batches ``[B, 3, H, W]`` in ``[-1, 1]``."""
        features_a = self.net((a - self.shift) / self.scale)
        features_b = self.net((b - self.shift) / self.scale)
        total = a.new_zeros(a.shape[0])
        for k, (fa, fb) in enumerate(zip(features_a, features_b, strict=True)):
            diff = (_unit(fa) - _unit(fb)).pow(2)
            total = total + getattr(self, f"lin{k}")(diff).mean(dim=(1, 2, 3))
        return total


def _unit(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def load_lpips_weights(network: LPIPSNetwork, path: str) -> None:
    """Fill ``network`` from a ``.safetensors`` file (key names in the module docstring).

    :raises CheckpointError: naming the file, or the missing, unexpected or mis-shaped tensor.
    """
    state = {}
    for key, value in plugin_api.read_safetensors(path).items():
        if key.startswith(("scaling_layer.", "lins.", "classifier.")):
            continue
        match = _FEATURES_KEY.fullmatch(key)
        if match is not None:
            index = int(match.group(1))
            slot = next((k for k, (a, b) in enumerate(VGG16_SLICES, start=1) if a <= index < b), None)
            if slot is None:
                continue  # beyond relu5_3: not part of LPIPS
            key = f"net.slice{slot}.{index}.{match.group(2)}"
        state[key] = value
    plugin_api.load_weights(network, state, source=path)


@attrs.frozen(kw_only=True)
class LPIPSOptions:
    """Options of the ``lpips`` loss.

    :param weights: a ``.safetensors`` file with the LPIPS-VGG16 weights (required; none are bundled).
    :param weight: the term's factor (taming: ``perceptual_weight`` 1.0).
    """

    weights: str | None = None
    weight: float = 1.0


class LPIPSLoss:
    """Perceptual loss: ``weight * mean LPIPS(x, x')``, from weights a user supplies."""

    def __init__(self, options: LPIPSOptions | None = None) -> None:
        options = options or LPIPSOptions()
        if options.weights is None:
            raise ConfigError(
                "the lpips loss needs pretrained LPIPS-VGG16 weights, which are not bundled: set its option "
                "weights to a .safetensors file (keys net.slice{1..5}.* and lin{0..4}.model.1.weight, as the "
                "`lpips` package names them; docs/image-tokenizer.md shows how to make one)"
            )
        self.options = options
        self.network = LPIPSNetwork()
        load_lpips_weights(self.network, options.weights)
        self.network.eval().requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS distances ``[B]`` between pixel batches in ``[-1, 1]`` (differentiable in both)."""
        return self.network(a.float(), b.float())  # type: ignore[no-any-return]

    def loss(self, inputs: ImageLossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        value = self.distance(inputs.pixels, inputs.reconstruction).mean()
        return self.options.weight * value, {"lpips": float(value.detach())}

    def update(self, inputs: ImageLossInputs) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}  # frozen: the weights come from the user's file

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def to(self, device: torch.device) -> LPIPSLoss:
        self.network.to(device)
        return self


# -- adversarial --------------------------------------------------------------------------------------


class PatchDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN: one real/fake logit per overlapping patch (70 x 70 px for 3 layers)."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = base_channels
        for n in range(1, num_layers + 1):
            out = base_channels * min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [nn.Conv2d(width, out, 4, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out)]
            layers.append(nn.LeakyReLU(0.2))
            width = out
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.num_layers = num_layers
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def min_resolution(self) -> int:
        """The smallest image side that leaves at least one patch: ``3 * 2**num_layers``."""
        return 3 * 2**self.num_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_resolution():
            raise ConfigError(
                f"the patch-gan discriminator with num_layers={self.num_layers} needs images of at least "
                f"{self.min_resolution()} px, got {list(x.shape[-2:])}: lower its num_layers option"
            )
        return self.main(x)  # type: ignore[no-any-return]


@attrs.frozen(kw_only=True)
class PatchGANOptions:
    """Options of the ``patch-gan`` loss (defaults: taming's discriminator).

    :param weight: the adversarial factor (taming: ``disc_weight``); with ``adaptive_weight`` it
        multiplies the gradient-norm ratio.
    :param start_step: the first step with an adversarial term and discriminator updates (taming:
        ``disc_start``; start once reconstructions are reasonable).
    :param adaptive_weight: scale the term by ``|grad nll| / (|grad g| + 1e-4)`` at the decoder's last layer.
    :param max_adaptive_weight: upper clamp of that ratio.
    :param num_layers: strided layers of the discriminator (``3``: 70 px patches; images need
        ``3 * 2**num_layers`` px at least).
    :param base_channels: width of its first layer.
    :param learning_rate: of its Adam optimiser.
    :param betas: of its Adam optimiser (taming: ``(0.5, 0.9)``).
    """

    weight: float = attrs.field(default=0.8, validator=attrs.validators.ge(0.0))
    start_step: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    adaptive_weight: bool = True
    max_adaptive_weight: float = attrs.field(default=1e4, validator=attrs.validators.gt(0.0))
    num_layers: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    base_channels: int = attrs.field(default=64, validator=attrs.validators.ge(1))
    learning_rate: float = attrs.field(default=1e-4, validator=attrs.validators.gt(0.0))
    betas: tuple[float, float] = (0.5, 0.9)


class PatchGANLoss:
    """Adversarial loss with a PatchGAN discriminator, hinge loss, start step and adaptive weight."""

    def __init__(self, options: PatchGANOptions | None = None) -> None:
        self.options = options = options or PatchGANOptions()
        self.discriminator = PatchDiscriminator(base_channels=options.base_channels, num_layers=options.num_layers)
        self.optimizer = torch.optim.Adam(
            self.discriminator.parameters(), lr=options.learning_rate, betas=options.betas
        )

    def loss(self, inputs: ImageLossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        o = self.options
        if inputs.step < o.start_step:
            return inputs.reconstruction_loss.new_zeros(()), {}
        g_loss = -self.discriminator(inputs.reconstruction).mean()
        factor = torch.tensor(o.weight, device=g_loss.device)
        if o.adaptive_weight:
            nll_grad = torch.autograd.grad(inputs.reconstruction_loss, inputs.last_layer, retain_graph=True)[0]
            g_grad = torch.autograd.grad(g_loss, inputs.last_layer, retain_graph=True)[0]
            ratio = nll_grad.norm() / (g_grad.norm() + 1e-4)
            factor = factor * ratio.clamp(0.0, o.max_adaptive_weight).detach()
        return factor * g_loss, {"g_loss": float(g_loss.detach()), "adversarial_weight": float(factor)}

    def update(self, inputs: ImageLossInputs) -> dict[str, float]:
        if inputs.step < self.options.start_step:
            return {}
        logits_real = self.discriminator(inputs.pixels.detach())
        logits_fake = self.discriminator(inputs.reconstruction.detach())
        d_loss = 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())
        self.optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.optimizer.step()
        return {
            "d_loss": float(d_loss.detach()),
            "logits_real": float(logits_real.detach().mean()),
            "logits_fake": float(logits_fake.detach().mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])

    def to(self, device: torch.device) -> PatchGANLoss:
        self.discriminator.to(device)
        return self
