"""mlcore: the real/bogus classifier, its uncertainty estimates and the active-learning toolbox.

Pure Python + NumPy + PyTorch; this package never imports Django so it can be used from
Celery workers, the command line (``python -m mlcore --help``) and notebooks alike.

Importing ``mlcore`` is cheap on purpose: torch is imported by the submodules that need it
(``mlcore.models``, ``mlcore.train``, ``mlcore.score``, ``mlcore.checkpoint``, ``mlcore.data``),
not here. The public API is documented in docs/mlcore.md.
"""

# Bumped whenever mlcore.prep changes what the network sees; recorded in every checkpoint and
# checked on load, so a model is never fed differently prepared triplets than it was trained on.
PREPROCESSING_VERSION = "braai-l2-v1"

CLASS_NAMES = ("bogus", "real")

__all__ = ["CLASS_NAMES", "PREPROCESSING_VERSION"]
