"""Widgets, one module per screen region: case tree, scores, trigger norms, trigger hunt, data audit, notes, run log."""
