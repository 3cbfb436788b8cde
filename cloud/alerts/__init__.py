"""Alerts: what grid apps, screens and other systems hear about cases, live and as CAP."""
