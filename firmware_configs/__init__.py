"""Declarative node profiles, camera templates, model profiles and rule presets."""
