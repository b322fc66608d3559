"""camcli's demo video classifier: a small 3D CNN that tells which shape moves.

Built by ``build()`` (``--model demo/shapes_video_net.py:build --task video``); its weights are
``demo/shapes_video.safetensors``, trained by ``scripts/train_video.py`` on the clips of
``scripts/video_scenes.py``: every clip shows a circle, a square and a triangle standing still,
and one more shape that moves; the class is the moving one's (a shape that stands still says
nothing, so the evidence is where something moves). Input: 12 frames of 64 x 64, RGB scaled to
[0, 1] and normalised with mean 0.5 and std 0.25. The stem and the first block halve the frame
twice (64 -> 16), the second block halves time (12 -> 6); global average pooling and one linear
layer follow, so CAM applies at ``block3`` as Grad-CAM does.
"""

from torch import nn


def unit(cin: int, cout: int, kernel, stride) -> list[nn.Module]:
    padding = tuple(k // 2 for k in kernel)
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False), nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True)]


class ShapesVideoNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(*unit(3, 16, (3, 5, 5), (1, 2, 2)))
        self.block1 = nn.Sequential(*unit(16, 32, (3, 3, 3), (1, 2, 2)))
        self.block2 = nn.Sequential(*unit(32, 48, (3, 3, 3), (2, 1, 1)))
        self.block3 = nn.Sequential(*unit(48, 64, (3, 3, 3), (1, 1, 1)))
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(self.pool(self.block3(self.block2(self.block1(self.stem(x))))).flatten(1))


def build(classes: int = 3) -> nn.Module:
    return ShapesVideoNet(classes)
