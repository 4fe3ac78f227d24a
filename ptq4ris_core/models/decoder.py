"""LAVT's top-down conv decoder, with coordinate channels and a stride-2 image stem.

Fused stage features from coarse to fine are upsampled and concatenated; a stride-2
stem on the image sharpens the final mask's borders. Output: 2-class mask logits.
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import coord_grid
from .swin import resize_like


def conv_bn_relu(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def coord_maps(x):
    """Coordinate channels (B, 2, H, W) for a feature map: the same grid the fusion queries get."""
    b, _, h, w = x.shape
    return coord_grid(h, w, x.device, x.dtype).t().reshape(1, 2, h, w).expand(b, -1, -1, -1)


class Decoder(nn.Module):
    def __init__(self, dims: tuple[int, ...], width: int, stem_width: int):
        super().__init__()
        *fine, coarse = dims
        self.top = conv_bn_relu(coarse + 2, width)
        self.fuse = nn.ModuleList(
            nn.Sequential(conv_bn_relu(width + d + 2, width), conv_bn_relu(width, width)) for d in reversed(fine))
        self.stem = conv_bn_relu(3, stem_width, stride=2)
        self.refine = conv_bn_relu(width + stem_width + 2, width // 2)
        self.classifier = nn.Conv2d(width // 2, 2, 1)

    def forward(self, image, feats):
        x = self.top(torch.cat([feats[-1], coord_maps(feats[-1])], 1))
        for block, f in zip(self.fuse, reversed(feats[:-1])):
            x = block(torch.cat([resize_like(x, f), f, coord_maps(f)], 1))
        s = self.stem(image)
        x = self.refine(torch.cat([resize_like(x, s), s, coord_maps(s)], 1))
        return resize_like(self.classifier(x), image)
