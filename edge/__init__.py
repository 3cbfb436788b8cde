"""The edge agent: cameras, motion gating, detection, tracking, rules, outbox, publishing."""
