"""LPIPS (Zhang et al. 2018, v0.1) implemented here, so no torchvision / lpips package is needed.

The trunk is torchvision's VGG16 or AlexNet ``features`` with the SAME parameter names (``features.N.weight``), so a
torchvision ImageNet state dict (``vgg16-397923af.pth``, ``alexnet-owt-7be5be79.pth``, or a safetensors copy) loads
as is; the linear heads use the lpips package's names (``lin{k}.model.1.weight``, from ``lpips/weights/v0.1/vgg.pth``
or ``alex.pth``). Without both files the metric is unavailable: :func:`load_lpips` returns None and the reason,
never a randomly initialised network.

d(x, y) = Σ_l mean_{h,w} w_l · (f̂_l(x) − f̂_l(y))², f̂ = features unit-normalised over channels, inputs in [0, 1]
mapped to [−1, 1] and then shifted / scaled by the lpips ScalingLayer constants.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from animate124.errors import MissingWeightsError

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)

# torchvision `features` layouts: (kind, args) per index; "C" = conv (in, out, kernel, stride, pad), "R" = ReLU,
# "M" = max-pool (kernel, stride); and lpips' slice ends (the ReLU outputs compared).
_VGG16 = ["C3,64,3,1,1", "R", "C64,64,3,1,1", "R", "M2,2", "C64,128,3,1,1", "R", "C128,128,3,1,1", "R", "M2,2",
          "C128,256,3,1,1", "R", "C256,256,3,1,1", "R", "C256,256,3,1,1", "R", "M2,2", "C256,512,3,1,1", "R",
          "C512,512,3,1,1", "R", "C512,512,3,1,1", "R", "M2,2", "C512,512,3,1,1", "R", "C512,512,3,1,1", "R",
          "C512,512,3,1,1", "R"]
_ALEX = ["C3,64,11,4,2", "R", "M3,2", "C64,192,5,1,2", "R", "M3,2", "C192,384,3,1,1", "R", "C384,256,3,1,1", "R",
         "C256,256,3,1,1", "R"]
NETS = {
    "vgg": (_VGG16, (4, 9, 16, 23, 30), (64, 128, 256, 512, 512)),
    "alex": (_ALEX, (2, 5, 8, 10, 12), (64, 192, 384, 256, 256)),
}


def _layer(spec: str) -> nn.Module:
    if spec == "R":
        return nn.ReLU(inplace=False)
    args = [int(a) for a in spec[1:].split(",")]
    if spec[0] == "M":
        return nn.MaxPool2d(kernel_size=args[0], stride=args[1])
    cin, cout, k, s, p = args
    return nn.Conv2d(cin, cout, k, stride=s, padding=p)


class _NetLinLayer(nn.Module):
    """lpips' 1×1 head: ``model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))`` (key ``model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance with a VGG16 or AlexNet trunk (random weights until loaded: use :func:`load_lpips`).

    Args:
        net: ``vgg`` | ``alex``.
    """

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
        layers, self.slice_ends, channels = NETS[net]
        self.net = net
        self.features = nn.Sequential(*[_layer(s) for s in layers])
        for k, c in enumerate(channels):
            self.add_module(f"lin{k}", _NetLinLayer(c))
        self.shift: Tensor
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.scale: Tensor
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def _feats(self, x: Tensor) -> list[Tensor]:
        h, out, start = (x * 2.0 - 1.0 - self.shift) / self.scale, [], 0
        for end in self.slice_ends:
            for i in range(start, end):
                h = self.features[i](h)
            out.append(h)
            start = end
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distances of image pairs.

        Args:
            x: [N, 3, H, W] in [0, 1].
            y: [N, 3, H, W] in [0, 1].

        Returns:
            [N] LPIPS distances (0 for identical images).
        """
        total = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        for k, (fx, fy) in enumerate(zip(self._feats(x), self._feats(y))):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            lin = getattr(self, f"lin{k}").model
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def _read_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise MissingWeightsError(f"LPIPS weight file {path} not found; check metrics lpips.*_weights paths")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise MissingWeightsError(f"LPIPS weight file {path} is not a state dict; use the torchvision/lpips file")
    return state


def load_lpips(
    net: str, trunk_weights: str | None, head_weights: str | None, device: str | torch.device = "cpu"
) -> tuple[LPIPS | None, str | None]:
    """LPIPS with trunk and head weights from local files.

    Args:
        net: ``vgg`` | ``alex``.
        trunk_weights: torchvision state dict of the whole network (only ``features.*`` keys are used).
        head_weights: lpips v0.1 head state dict (``lin{k}.model.1.weight``).
        device: target device.

    Returns:
        (model, None) when both files load, else (None, reason) when a path is not given.

    Raises:
        MissingWeightsError: a given file is missing or its keys / shapes do not fit the network.
    """
    if not trunk_weights or not head_weights:
        return None, (f"no LPIPS weights: set metrics lpips.trunk_weights=<torchvision {net} .pth> and "
                      f"lpips.head_weights=<lpips v0.1 {net}.pth> (or ANIMATE124_LPIPS_TRUNK / _HEADS)")
    model = LPIPS(net)
    trunk = {k: v for k, v in _read_state(Path(trunk_weights)).items() if k.startswith("features.")}
    heads = {k: v for k, v in _read_state(Path(head_weights)).items() if k.startswith("lin")}
    own = model.state_dict()
    for name, part in (("trunk", trunk), ("heads", heads)):
        want = {k for k in own if k.startswith("features." if name == "trunk" else "lin")}
        if set(part) != want:
            missing, extra = sorted(want - set(part))[:3], sorted(set(part) - want)[:3]
            raise MissingWeightsError(f"LPIPS {name} weights do not fit net={net} (missing {missing}, unexpected "
                                      f"{extra}); pass the torchvision {net} / lpips v0.1 {net} files")
        bad = [k for k in part if tuple(part[k].shape) != tuple(own[k].shape)]
        if bad:
            raise MissingWeightsError(f"LPIPS {name} tensor {bad[0]} has shape {tuple(part[bad[0]].shape)}, expected "
                                      f"{tuple(own[bad[0]].shape)}; pass the {net} files")
    model.load_state_dict({**trunk, **heads})
    return model.to(device).eval(), None
