"""Notification routing and receivers."""
