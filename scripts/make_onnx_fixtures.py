#!/usr/bin/python3
"""Makes the small ONNX models the import/export parity tests read (tests/fixtures/onnx/).

Run with Debian's python3 (torch 1.13, torchvision 0.14): /usr/bin/python3 scripts/make_onnx_fixtures.py
The tests compare Lora's forward with ONNX Runtime's on these files, so no reference outputs are
stored. Weights are random (seeded); batch, height and width are dynamic axes where the model allows.
"""
import os, sys
import torch
import torchvision
from torchvision.models import resnet, efficientnet, mobilenetv2, vision_transformer

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "onnx")
os.makedirs(out, exist_ok=True)


class SmallResNet(resnet.ResNet):
    """torchvision's ResNet with narrow stages (8-64 channels): the same modules and ops, a small file."""

    def __init__(self, block, layers, num_classes=10, width=8):
        torch.nn.Module.__init__(self)
        self._norm_layer = torch.nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = torch.nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(width * 8 * block.expansion, num_classes)


def randomise_bn(model):
    # trained running statistics, not the identity ones a fresh model has
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def export(name, model, size, opset, spatial=True, keep_bn=False):
    torch.manual_seed(0)
    randomise_bn(model)
    model.eval()
    x = torch.randn(2, 3, size, size)
    axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
    path = os.path.join(out, f"{name}.onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": axes, "output": {0: "batch"}},
                      training=torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL,
                      do_constant_folding=not keep_bn)
    print(f"{path}: {os.path.getsize(path)} bytes")


torch.manual_seed(0)
export("resnet_basic_op13", SmallResNet(resnet.BasicBlock, [1, 1, 1, 1]), 32, 13)
torch.manual_seed(1)
# BatchNormalization kept as a node (no Conv+BN folding), as the ML.NET ResNet-18 has it
export("resnet_bottleneck_bn_op15", SmallResNet(resnet.Bottleneck, [1, 1, 1, 1], width=4), 32, 15, keep_bn=True)
torch.manual_seed(2)
export("mobilenet_v2_op14", mobilenetv2.mobilenet_v2(width_mult=0.25, num_classes=10), 32, 14)
torch.manual_seed(3)
setting, last = efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
export("efficientnet_op16", efficientnet.EfficientNet(setting, 0.2, num_classes=10, last_channel=last), 32, 16)
for opset in (13, 17):
    torch.manual_seed(4)
    vit = vision_transformer.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=32, mlp_dim=64, num_classes=10)
    export(f"vit_op{opset}", vit, 32, opset, spatial=False)
