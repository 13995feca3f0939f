"""Fixtures shared by runner tests live in tests/conftest.py (sshd, small_model, slow_model)."""
