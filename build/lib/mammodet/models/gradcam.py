"""Grad-CAM (Selvaraju et al. 2017) with one forward hook: which regions raised a class's logit.

The map of image b for class c is ``ReLU(sum_k w_k A_k)`` with ``A`` the activations of ``layer`` and
``w_k`` the spatial mean of ``d logit_c / d A_k``, upsampled bilinearly to the image and min-max scaled to
0..1, as the ``grad-cam`` package computes it (the tests compare the two). The gradient is taken with
``torch.autograd.grad`` from an input that requires it, so it flows through frozen layers, and no parameter
gradient is touched; it runs in float32 and eval mode, and the module's mode is restored.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def grad_cam(model: nn.Module, layer: nn.Module, images: Tensor, classes: Tensor) -> Tensor:
    """Grad-CAM maps ``[B, H, W]`` in 0..1 of ``images`` ``[B, C, H, W]`` for ``classes`` ``[B]``."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _module, _inputs, output: captured.append(output))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(images.device.type, enabled=False):
            inputs = images.detach().clone().float().requires_grad_(True)
            logits = model(inputs)
            score = logits.gather(1, classes.to(logits.device).long().view(-1, 1)).sum()
            (gradients,) = torch.autograd.grad(score, captured[-1])
    finally:
        handle.remove()
        model.train(was_training)
    activations = captured[-1].detach()
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    low = cam.amin(dim=(1, 2), keepdim=True)
    span = cam.amax(dim=(1, 2), keepdim=True) - low
    return torch.where(span > 0, (cam - low) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
