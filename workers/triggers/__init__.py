"""Triggers worker (faust-streaming): turns customer events into suspension commands."""
