"""Modal screens: prompts (new case, add subject, export, custom candidate), the probe picker, help."""
