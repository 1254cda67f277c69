"""Grad-CAM family maps, one small module per concern: the methods by name (:mod:`.methods`),
the targets (:mod:`.targets`), batched computation (:mod:`.compute`), overlays
(:mod:`.overlays`), the probe set (:mod:`.probes`) and figures (:mod:`.figures`).

A target layer should be the output of a block (e.g. a max-pool or a whole block
``nn.Sequential``) or a ReLU: the package hooks the layer's *output*, so hooking a convolution
that is followed by an in-place ReLU records the post-ReLU tensor.
"""
