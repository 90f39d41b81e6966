"""Prometheus rule files and the alert state machine."""
