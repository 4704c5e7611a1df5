"""Sharing what the camera sees: the web view and events page, Prometheus metrics, MQTT (Frigate's topic layout)
and Home Assistant discovery."""
