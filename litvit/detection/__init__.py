"""Object detection and instance segmentation with LIT backbones (RetinaNet, Mask R-CNN).

Built on torchvision's detection models, pycocotools and the shared training engine.
"""
from .models import DETECTORS, LITFPNBackbone, build_detector, mask_rcnn_lit, retinanet_lit

__all__ = ["retinanet_lit", "mask_rcnn_lit", "build_detector", "LITFPNBackbone", "DETECTORS"]
