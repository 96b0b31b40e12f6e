"""Incremental inference for occlusion (Krypton: Nakandala, Kumar, Papakonstantinou, SIGMOD 2019,
https://arxiv.org/abs/1803.04113).

An occluding patch changes only a small part of the early feature maps.  The model is run once
on the unoccluded image and every node's output is cached; for each occluded image only the
*changed region* of each layer is recomputed, from the cached input of that layer with the
changed sub-region pasted in, and the result is pasted into (a copy of) the cached output.

The model (the :class:`~interpcli.models.Classifier`, encoder included) is traced with
``torch.fx``; the graph is walked in topological order.  Each node's value during the occluded
pass is one of

- *static*: independent of the input (parameters, buffers, constants): the cached value;
- *region*: the cached clean output plus, per occluded image b, a changed box of uniform size
  (h, w) at (y_b, x_b) holding the new values (B, C, h, w);
- *full*: the whole tensor for every occluded image (B, ...), computed the ordinary way.

Region rules: elementwise ops (encoder normalisation, BatchNorm in eval mode, activations,
Identity, Dropout in eval mode, residual ``+``) keep the box, taking the union of the boxes of
their inputs; ``Conv2d`` (any kernel, stride, padding, dilation, groups; zero padding),
``MaxPool2d`` and ``AvgPool2d`` (``ceil_mode=False``) map the box through their receptive field
and are evaluated on the input sub-window that produces the changed outputs, with the layer's
padding taken from the padded cached input; ``torch.cat`` along channels takes the union.
Anything else (global pooling, flatten, linear layers, unsupported ops) is evaluated in full on
the materialised tensors, and so is every node after it: correct for any traceable model, only
slower.  When a changed box would cover more than ``threshold`` of a layer's area (Krypton's
switch), that layer and the ones after it are recomputed in full.

The boxes are supersets of the outputs that can change, so every value outside them equals the
cached clean value exactly and the scores equal the ordinary batched forward passes up to
floating-point reassociation in the convolutions.
"""

from __future__ import annotations

from .plan import DEFAULT_THRESHOLD, IncrementalPlan, IncrementalUnsupported, get_plan, incremental_occlusion_scores
from .regions import conv_out_range

__all__ = ["IncrementalPlan", "IncrementalUnsupported", "get_plan", "incremental_occlusion_scores", "conv_out_range",
           "DEFAULT_THRESHOLD"]
