"""Running as a systemd service: sd_notify, the progress watchdog, Pi health, install/uninstall."""
