"""Semantic segmentation with LIT backbones: Semantic FPN, ADE20K-format data, training and evaluation.

``litvit segment train|eval|predict`` on the command line; in Python::

    from litvit.segmentation import semantic_fpn_lit
    model = semantic_fpn_lit("lit_ti", num_classes=150, backbone_checkpoint="lit_ti.pth")
    logits = model(images)  # B x 150 x H x W, sides multiples of 32
"""
from .metrics import ConfusionMatrix, metrics_from_confusion
from .models import SemanticFPN, SemanticFPNHead, semantic_fpn_lit

__all__ = ["semantic_fpn_lit", "SemanticFPN", "SemanticFPNHead", "ConfusionMatrix", "metrics_from_confusion"]
