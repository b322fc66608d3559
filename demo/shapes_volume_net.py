"""camcli's demo volume classifier: a small 3D CNN that tells a sphere, a cube and a torus apart.

Built by ``build()`` (``--model demo/shapes_volume_net.py:build``); its weights are
``demo/shapes_volume.safetensors``, trained by ``scripts/train_volume.py`` on the scans of
``scripts/volume_scenes.py`` (32 x 32 x 32 voxels, one channel, scaled per volume by
percentiles). Three blocks of 3D convolutions halve the grid twice (32 -> 16 -> 8); global
average pooling and one linear layer follow, so CAM applies at ``block3`` as Grad-CAM does.
"""

from torch import nn


def block(cin: int, cout: int, convs: int, pool: bool) -> nn.Sequential:
    layers = []
    for i in range(convs):
        layers += [nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, *([nn.MaxPool3d(2)] if pool else []))


class ShapesVolumeNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.block1 = block(1, 8, 1, pool=True)
        self.block2 = block(8, 16, 2, pool=True)
        self.block3 = block(16, 32, 2, pool=False)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block3(self.block2(self.block1(x)))).flatten(1))


def build(classes: int = 3) -> nn.Module:
    return ShapesVolumeNet(classes)
