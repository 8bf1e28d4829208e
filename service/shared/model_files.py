"""Where the trained model lives, in Azure ML's ``<name>/<version>`` layout (AZUREML_MODEL_DIR names
the version folder, so the AzureML server reads the model's id, ``mnist:1``, from the path)."""
from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parents[1] / "model" / "mnist" / "1"
MODEL_FILE = "mnist_linear.npz"
CARD_FILE = "model_card.json"
NETWORK_FILE = "mnist_network.npz"
NETWORK_CARD_FILE = "network_card.json"
