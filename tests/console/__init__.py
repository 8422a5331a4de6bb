"""The operator console, in Chromium against real processes."""
