"""Project-wide test set-up: deterministic, single-threaded torch so tests are repeatable and cheap on 2 cores.

Every test has a 300 s timeout (``timeout`` in pyproject's pytest options; ``@pytest.mark.timeout(N)`` changes it);
tests marked ``gpu`` run only where CUDA is present.
"""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="CUDA not available")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small synthetic egocentric world in the official formats, generated once per test session."""
    from egovlp.data.synthetic import SynthConfig, generate

    cfg = SynthConfig(
        seed=3, num_videos=5, video_seconds=40.0, chunk_seconds=15.0, num_mcq_inter=6, num_mcq_intra=7,
        mcq_pairs_per_video=4, tokenizer_vocab_size=300, workers=1,
    )  # fmt: skip
    return generate(tmp_path_factory.mktemp("world"), cfg)
