"""Locally built test subjects (the digits zoo)."""
