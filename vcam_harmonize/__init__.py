"""vcam-harmonize."""
