"""Offline evaluation: protocols, baselines, metrics, studies. Imported by nobody but the CLI."""
