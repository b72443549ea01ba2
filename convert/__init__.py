"""Legacy SageMaker Hugging Face tarballs into registered MLflow Transformers models.

Importing this package switches the Hugging Face libraries to offline mode: it must happen
before ``huggingface_hub`` is imported, or every log_model call tries the hub for a model card
(27 s instead of 3 s, field notes). Checkpoints are always local here.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# MLflow prints "View run ... at <url>" on stdout when a run ends: it would break --json output
# and show the private host name that stands for the target.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
