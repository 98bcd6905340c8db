"""Programs nestbed runs inside nodes (`python -m nestbed.apps.NAME`): traffic, servers, samplers.

They use the standard library only, report what they measure as JSON
lines in the node's mailbox (mailbox.py), and stop cleanly on SIGTERM.
"""
