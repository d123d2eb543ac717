"""egovlp: egocentric video-language pre-training (EgoVLPv2, fusion in the backbone)."""

__version__ = "0.1.0"
