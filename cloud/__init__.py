"""The cloud service: API, MQTT ingest, org tree, cases, alerts, fleet, operations screen."""
