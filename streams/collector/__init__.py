"""Segment-compatible collection: the pure mapping of Segment messages to input events."""
