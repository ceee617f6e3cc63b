"""Image classification: training with the released LIT recipes, evaluation, prediction, curves."""
from .config import PRESETS, TrainConfig, recipe_defaults, resolve_train_config
# Imported here, not lazily: the submodule ``train`` would otherwise shadow the function of the
# same name once anything has imported it.
from .train import train

__all__ = ["TrainConfig", "PRESETS", "recipe_defaults", "resolve_train_config", "train", "evaluate_checkpoint",
           "load_classifier", "predict_images", "plot_run"]


def __getattr__(name):  # keep `import litvit.classification` light; torch-heavy parts load on use
    if name in ("evaluate_checkpoint", "load_classifier", "predict_images"):
        from . import inference

        return getattr(inference, name)
    if name == "plot_run":
        from .plot import plot_run

        return plot_run
    raise AttributeError(name)
