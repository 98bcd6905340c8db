"""Shared vocabulary: small type aliases used across model, plan and realize."""
from typing import Literal

NodeName = str
SegmentName = str          # a link or a LAN
ExperimentName = str
SegmentKind = Literal["link", "lan"]
BitsPerSecond = int
Seconds = float
Fraction = float           # 0.0 … 1.0 (loss)
Location = str             # "file.yaml:12" or "<python>"
