"""Sharing what the camera sees: the web view and events page, Prometheus metrics, MQTT events."""
