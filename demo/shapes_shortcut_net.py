"""The audit's shortcut demo: the demo classifier's trunk with a small head taught a watermark.

Built by ``build()`` (``--model demo/shapes_shortcut_net.py:build``): torchvision's resnet18 up to
``layer3`` (its weights the demo classifier's, ``demo/shapes_resnet18.safetensors``, frozen in
training) and ``head``, two 3x3 convolutions on its 14 x 14 grid, then global average pooling
and one linear layer, so CAM applies at ``head`` as Grad-CAM does. ``scripts/train_shortcut.py``
trains the head on scenes where one class nearly always carries a watermark in a corner (the
weights ``demo/shapes_shortcut.safetensors``), and the same head on the same scenes without it
(the clean twin), so that ``camcli audit`` can be shown a model that learnt a shortcut.
"""

from torch import nn
from torchvision.models.resnet import BasicBlock


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    down = None if stride == 1 and cin == cout else nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
    return nn.Sequential(BasicBlock(cin, cout, stride, down), BasicBlock(cout, cout))


class ShapesShortcutNet(nn.Module):
    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)  # resnet18's stem and layers, names kept
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.head = nn.Sequential(
            nn.Conv2d(256, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, classes)

    def trunk(self, x):
        return self.layer3(self.layer2(self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))))

    def forward(self, x):
        return self.fc(self.pool(self.head(self.trunk(x))).flatten(1))


def build(classes: int = 6) -> nn.Module:
    return ShapesShortcutNet(classes)
