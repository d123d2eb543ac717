"""Visualisations of what the model does: the text-to-video cross-attention maps of the fused layers
(:func:`attention_maps` computes them as arrays, :func:`draw_attention` draws them; matplotlib only for drawing)."""

from egovlp.viz.attention import SENTENCE, AttentionMaps, attention_maps, fused_layers, word_groups
from egovlp.viz.plot import attention_png, draw_attention

__all__ = [
    "SENTENCE",
    "AttentionMaps",
    "attention_maps",
    "attention_png",
    "draw_attention",
    "fused_layers",
    "word_groups",
]
