"""Host transports: how the controller reaches the hosts of the ptopo (transport.py), this machine (local.py),
and the control surface they hand out for a running experiment (control.py)."""
