"""torch.hub entry points for LIT.

    model = torch.hub.load("path/to/litvit", "lit_ti", source="local", checkpoint_path="lit_ti.pth")

No weights are downloaded: ``checkpoint_path`` names a local checkpoint in any layout
:func:`litvit.create_model` reads (released LIT, litvit training checkpoint, timm,
safetensors). Other keyword arguments are model options (``num_classes``, ``img_size``, ...).
"""
dependencies = ["torch", "timm"]

from typing import Any, Optional  # noqa: E402

from litvit.factory import create_backbone as _create_backbone  # noqa: E402
from litvit.factory import create_model as _create_model  # noqa: E402


_TITLES = {"lit_ti": "LIT-Ti", "lit_s": "LIT-S", "lit_m": "LIT-M", "lit_b": "LIT-B"}


def _entry(name: str):
    def entry(pretrained: bool = False, checkpoint_path: Optional[str] = None, **kwargs: Any):
        if pretrained and checkpoint_path is None:
            raise ValueError(
                f"{name}: litvit downloads no weights; pass checkpoint_path= to a local checkpoint"
            )
        return _create_model(name, checkpoint_path=checkpoint_path, **kwargs)

    entry.__name__ = name
    entry.__doc__ = (
        f"{_TITLES[name]} classifier. ``checkpoint_path``: local weights (any layout litvit reads); "
        "other keyword arguments are model options (``num_classes``, ``img_size``, ...)."
    )
    return entry


lit_ti = _entry("lit_ti")
lit_s = _entry("lit_s")
lit_m = _entry("lit_m")
lit_b = _entry("lit_b")


def lit_backbone(model_name: str = "lit_ti", checkpoint_path: Optional[str] = None, **kwargs: Any):
    """Headless LIT for dense prediction (:func:`litvit.create_backbone`); use
    ``model.forward_intermediates(x, intermediates_only=True)`` for the stride 4-32 maps."""
    return _create_backbone(model_name, checkpoint_path=checkpoint_path, **kwargs)
