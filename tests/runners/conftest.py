import pytest

from tests.runners.models import build_int8_classifier
from tests.runners.sshd import start_sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """(model.tflite, eval.npz): a fast int8 classifier with 64 evaluation samples."""
    return build_int8_classifier(tmp_path_factory.mktemp("small_model"))


@pytest.fixture(scope="session")
def slow_model(tmp_path_factory):
    """A heavier model and 1500 samples, so a run can be interrupted half-way."""
    return build_int8_classifier(tmp_path_factory.mktemp("slow_model"), size=48, channels=32, samples=1500)
