"""Microcontroller firmware: build the C runtime + a generated model for a board (build.py),
run the same C on this host (host.py), and deploy/profile on a board over the serial protocol
(api.py). Nothing heavy is imported here."""
