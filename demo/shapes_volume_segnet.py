"""camcli's demo 3D segmenter: a small U-Net that labels each voxel background, sphere, cube or torus.

Built by ``build()`` (``--model demo/shapes_volume_segnet.py:build``); its weights are
``demo/shapes_volume_segmenter.safetensors``, trained by ``scripts/train_volume_segmenter.py`` on
the scans of ``scripts/volume_scenes.py`` (32 x 32 x 32 voxels, one channel, scaled per volume by
percentiles). Which shape a voxel belongs to depends on the whole shape, so the encoder halves
the grid twice (32 -> 16 -> 8) before the decoder brings it back with skip connections; ``up1``
is the last 3D map before the 1x1x1 convolution to the four classes (``head``), the layer camcli
explains by default.
"""

import torch
from torch import nn


def block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
                         nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class ShapesVolumeSegNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.down1 = block(1, 8)
        self.down2 = block(8, 16)
        self.bottom = block(16, 32)
        self.pool = nn.MaxPool3d(2)
        self.lift2 = nn.ConvTranspose3d(32, 16, 2, stride=2)
        self.up2 = block(32, 16)
        self.lift1 = nn.ConvTranspose3d(16, 8, 2, stride=2)
        self.up1 = block(16, 8)
        self.head = nn.Conv3d(8, classes, 1)

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(self.pool(d1))
        b = self.bottom(self.pool(d2))
        u2 = self.up2(torch.cat([self.lift2(b), d2], 1))
        u1 = self.up1(torch.cat([self.lift1(u2), d1], 1))
        return self.head(u1)


def build(classes: int = 4) -> nn.Module:
    return ShapesVolumeSegNet(classes)
