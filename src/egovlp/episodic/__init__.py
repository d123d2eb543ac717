"""Episodic memory over long videos: Ego4D natural-language queries (NLQ) and moment queries (MQ) heads."""
