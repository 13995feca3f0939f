"""The firmware tests' fixtures come from tests/firmware/fixtures.py (shared with tests/runners)."""

from tests.firmware.fixtures import arm_gcc, host_cc, model_dir, qemu, ref_model  # noqa: F401
