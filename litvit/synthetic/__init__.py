"""The synthetic shapes data of the demos and tests: coloured geometric shapes as an image
classification folder, a COCO-format detection set and an ADE20K-layout segmentation set
(``litvit data synth`` on the command line)."""
from .shapes import *  # noqa: F401,F403
from .shapes import __all__  # noqa: F401
