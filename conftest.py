"""Fixtures shared by the repository's tests (tests/) and the ROS package's own (ros2_ws/src/ptq4ris_ros/test/)."""
import os

# Everything loads offline; a test that tried the network would hang or fail here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenVINO's compile cache goes to a folder of this run's own, not the user's ~/.cache (inherited by the
# node processes the ROS tests start).
os.environ.setdefault("PTQ4RIS_CACHE_DIR", __import__("tempfile").mkdtemp(prefix="ptq4ris-test-ov-cache-"))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session")
def pretrained_text():
    from ptq4ris_core.models.text_encoder import TextEncoder
    return TextEncoder.pretrained().eval()


@pytest.fixture(scope="session")
def tiny_model(pretrained_text):
    """A small random-vision model with the real text encoder: fast, and shaped like the default."""
    from ptq4ris_core.models import RISConfig, RISModel
    torch.manual_seed(0)
    cfg = RISConfig(image_size=64, embed_dim=16, depths=(1, 2, 1, 1), heads=(1, 2, 2, 4), window=4,
                    decoder_width=16, stem_width=8)
    return RISModel(cfg, pretrained_text).eval()


@pytest.fixture(scope="session")
def default_engine(tmp_path_factory):
    """The default model's FP32 engine, exported once per test run."""
    from ptq4ris_core.engine import export_engine
    from ptq4ris_core.models import load_model
    return str(export_engine(load_model("default"), tmp_path_factory.mktemp("engine") / "fp32"))
