"""`gridwatch demo`: a small real county on one machine — the service, a secured broker,
three edge boxes provisioned as a technician would, running real detection on real clips."""
