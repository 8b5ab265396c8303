"""fastcnn's models written in PyTorch, with the same module names: the state dicts load
both ways. Used by the parity tests and by bench/ (which puts this folder on its path)."""


def torch_resnet20(torch, num_classes=10, in_channels=3):
    """The same network written in PyTorch, with torchvision's module names."""
    tnn = torch.nn

    class Block(tnn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or in_planes != planes:
                self.downsample = tnn.Sequential(
                    tnn.Conv2d(in_planes, planes, 1, stride, bias=False), tnn.BatchNorm2d(planes)
                )

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            self.relu = tnn.ReLU()
            stages, in_planes = [], 16
            for stage, planes in enumerate((16, 32, 64), start=1):
                blocks = []
                for index in range(3):
                    blocks.append(Block(in_planes, planes, 2 if stage > 1 and index == 0 else 1))
                    in_planes = planes
                stages.append(tnn.Sequential(*blocks))
            self.layer1, self.layer2, self.layer3 = stages
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(64, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


def torch_mobilenet_cifar(torch, num_classes=10, in_channels=3):
    """fastcnn.models.MobileNetCIFAR in PyTorch, with its keys."""
    from collections import OrderedDict

    tnn = torch.nn

    def block(c_in, c_out, stride):
        return tnn.Sequential(
            tnn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
            tnn.BatchNorm2d(c_in),
            tnn.ReLU(),
            tnn.Conv2d(c_in, c_out, 1, bias=False),
            tnn.BatchNorm2d(c_out),
            tnn.ReLU(),
        )

    blocks, channels = [], 32
    for c_out, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)):
        blocks.append(block(channels, c_out, stride))
        channels = c_out
    return tnn.Sequential(
        OrderedDict(
            conv1=tnn.Conv2d(in_channels, 32, 3, 1, 1, bias=False),
            bn1=tnn.BatchNorm2d(32),
            relu=tnn.ReLU(),
            layers=tnn.Sequential(*blocks),
            avgpool=tnn.AdaptiveAvgPool2d((1, 1)),
            flatten=tnn.Flatten(),
            fc=tnn.Linear(channels, num_classes),
        )
    )
